"""Prometheus metrics of the service (one process-wide registry, as prometheus_client expects)."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests, by route template, method and status class",
    ["handler", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time to the response's start, by route template and method",
    ["handler", "method"],
)

UPSTREAM_CALLS = Counter(
    "seedance_upstream_calls_total",
    "HTTP calls made to Seedance, by endpoint and outcome",
    ["endpoint", "outcome"],
)
JOB_SUBMISSIONS = Counter(
    "seedance_job_submissions_total",
    "Dispatcher submission attempts, by result",
    ["result"],
)
CALLBACKS_RECEIVED = Counter(
    "seedance_webhook_deliveries_total",  # its name since the first dashboards
    "Callbacks received from Seedance, by result",
    ["result"],
)
RECONCILER_POLLS = Counter(
    "seedance_reconciler_polls_total",
    "Status polls made by the reconciler for jobs whose callback is overdue, by result",
    ["result"],
)
RATE_LIMITED = Counter(
    "seedance_rate_limited_total",
    "Requests refused by a rate limit, by route class",
    ["route_class"],
)
JOBS_BY_STATUS = Gauge(
    "seedance_jobs",
    "Jobs in the database by status (read at scrape time)",
    ["status"],
)
MEDIA_COPIES = Counter(
    "seedance_media_copies_total",
    "Copy attempts of result videos into our storage, by outcome (stored, retry, or the "
    "failure code)",
    ["outcome"],
)
UPLOADS = Counter(
    "seedance_uploads_total",
    "Uploads received, by what they turned out to be (`unknown` when refused before) and "
    "outcome: stored, refused (not a file we take), too_large",
    ["kind", "outcome"],
)
UPLOAD_OBJECTS_REMOVED = Counter(
    "seedance_upload_objects_removed_total",
    "Uploaded files removed from storage (deleted, expired, erased, or cut short)",
)
MEDIA_OBJECTS_PURGED = Counter(
    "seedance_media_objects_purged_total",
    "Stored objects removed (deletion, erasure, retention)",
)
OUTBOUND_ATTEMPTS = Counter(
    "seedance_outbound_attempts_total",
    "Webhook delivery attempts to the product's endpoints, by endpoint id and result",
    ["endpoint", "result"],
)
OUTBOUND_OLDEST_PENDING = Gauge(
    "seedance_outbound_oldest_pending_seconds",
    "Age of the oldest undelivered webhook message, by endpoint id (read at scrape time)",
    ["endpoint"],
)
OUTBOUND_ENDPOINTS_DISABLED = Counter(
    "seedance_outbound_endpoints_disabled_total",
    "Webhook endpoints the service disabled because they failed for too long",
)
REDIS_BREAKER_OPEN = Gauge(
    "seedance_redis_breaker_open",
    "1 while the circuit breaker around Redis is open or probing (rate limits skip Redis)",
)
SSE_STREAMS_OPEN = Gauge("seedance_sse_streams_open", "Live streams (SSE) this process holds open")
SSE_STREAMS_REFUSED = Counter(
    "seedance_sse_streams_refused_total",
    "Live streams refused at a cap: per user (429) or per replica (503)",
    ["cap"],
)
DB_POOL_CHECKED_OUT = Gauge(
    "seedance_db_pool_checked_out", "Database connections in use (read at scrape time)"
)
EVENT_LOOP_LAG = Gauge(
    "seedance_event_loop_lag_seconds",
    "The longest a 0.5 s timer fired late since the last scrape: how long work held the loop",
)
GC_PAUSE = Histogram(
    "seedance_gc_pause_seconds",
    "How long each cyclic garbage collection held the process, by generation (2: full)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
UNKNOWN_PLANS = Counter(
    "seedance_unknown_plans_total",
    "Requests whose token or key named a plan not in PLANS (DEFAULT_PLAN applied), by name",
    ["plan"],
)
# the queue in front of the Seedance account (app/jobs/scheduler.py)
UPSTREAM_SLOTS_IN_USE = Gauge(
    "seedance_upstream_slots_in_use",
    "Jobs being submitted or rendering upstream, as the last claim counted them",
)
UPSTREAM_CAP = Gauge(
    "seedance_upstream_cap",
    "The account's concurrency the scheduler keeps to (set or learned; 0: none known)",
)
UPSTREAM_RATE_LIMITED = Counter(
    "seedance_upstream_rate_limited_total",
    "Submissions Seedance answered 429 (the account was full; the job waited on)",
)
QUEUE_WAIT = Histogram(
    "seedance_queue_wait_seconds",
    "From a job's creation to Seedance accepting it",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400, 86400),
)
QUEUED_BY_PLAN = Gauge(
    "seedance_queued_jobs",
    "Jobs waiting for a slot of the account, by plan (read at scrape time)",
    ["plan"],
)
QUEUE_OLDEST_AGE = Gauge(
    "seedance_queue_oldest_seconds",
    "Age of the oldest job waiting for a slot (read at scrape time)",
)
MODERATION_DECISIONS = Counter(
    "seedance_moderation_decisions_total",
    "Moderation decisions by stage, provider, category (`none` when clear) and outcome",
    ["stage", "provider", "category", "outcome"],
)
MODERATION_UNAVAILABLE = Counter(
    "seedance_moderation_unavailable_total",
    "Moderation calls that got no usable answer (down, slow, unreadable, or breaker open)",
    ["provider"],
)
MODERATION_BREAKER_OPEN = Gauge(
    "seedance_moderation_breaker_open",
    "1 while the circuit breaker around the moderation provider is open or probing",
)
UPSTREAM_REFUSALS = Counter(
    "seedance_upstream_content_refusals_total",
    "Jobs Seedance refused for their content, by stage (the shared account's health)",
    ["stage"],
)
MODERATION_QUEUE_OPEN = Gauge(
    "seedance_moderation_queue_open",
    "Cases waiting for a human in the review queue (read at scrape time)",
)
MODERATION_QUEUE_OLDEST = Gauge(
    "seedance_moderation_queue_oldest_seconds",
    "Age of the oldest open case in the review queue (read at scrape time)",
)
MODERATION_TIME_TO_DECISION = Histogram(
    "seedance_moderation_time_to_decision_seconds",
    "From a case opening to an admin's decision",
    buckets=(60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400),
)
UPSTREAM_ACCOUNT_PAUSED = Gauge(
    "seedance_upstream_account_paused",
    "1 while dispatch is paused because the Seedance account cannot work (out of credits, "
    "our key refused), by reason (read at scrape time)",
    ["reason"],
)
UPSTREAM_ACCOUNT_CREDITS_LEFT = Gauge(
    "seedance_upstream_account_credits_remaining",
    "The Seedance account's balance an operator last recorded, less the estimated cost of "
    "the jobs it accepted since (NaN: none recorded; read at scrape time)",
)
UPSTREAM_ACCOUNT_DAYS_LEFT = Gauge(
    "seedance_upstream_account_days_left",
    "Days the Seedance account's credits last at the last 7 days' spend (NaN: no balance "
    "recorded or nothing spent; read at scrape time): alert below a few days",
)
