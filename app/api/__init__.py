"""The HTTP edge: routers (`routes/`), the caller's identity and rate limits, error
bodies, the SSE response, request size caps and the OpenAPI document."""
