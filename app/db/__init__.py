"""Persistence: typed SQLAlchemy models and the async engine/session plumbing."""
