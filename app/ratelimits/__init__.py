"""Rate limits shared by every replica: moving windows (Redis, or memory on a laptop), the
per-route and per-plan limits, and the global rate of Seedance submissions."""
