"""Running the service: metrics, request telemetry, logs, event-loop lag, garbage
collection, and the health checks behind the probes."""
