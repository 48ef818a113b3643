"""The jobs domain: the state machine, the service, and the background loops around them."""
