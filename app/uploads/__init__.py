"""The users' own inputs: receive, sanitize, store, sign for Seedance, expire."""
