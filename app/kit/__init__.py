"""Generic pieces with no domain: errors, breaker, backoff, public URLs, cursors, rate
windows, the background-loop base. Nothing here knows jobs, media or HTTP frameworks."""
