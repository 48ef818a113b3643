"""Outbound webhooks: the product's servers learn every job outcome, signed by the Standard
Webhooks specification, delivered at least once from a transactional outbox."""
