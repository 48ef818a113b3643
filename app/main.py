"""The application factory. The lifespan owns every long-lived resource of a process:
the database engine, the shared httpx client to Seedance, the rate-limit storage and
the background loops (stopped gracefully on shutdown, after in-flight requests)."""

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import (
    admin,
    api_keys,
    batches,
    events,
    health,
    jobs,
    me,
    media,
    playground,
    webhook_endpoints,
    webhooks,
)
from app.api.docs import docs_router
from app.config import JwtAlgorithm, MediaBackend, Settings
from app.db.migrate import head_revision
from app.db.session import create_engine, create_sessionmaker
from app.errors import install_error_handlers, problem_responses
from app.garbage_collection import freeze_startup_objects, recording_pauses
from app.identity.verifier import TokenVerifier
from app.jobs.background import Loop
from app.jobs.dispatcher import Dispatcher
from app.jobs.events import EventHub, PostgresListener, publish_after_commit
from app.jobs.reconciler import Reconciler
from app.jobs.retention import RetentionSweeper
from app.jobs.stats import StatsRollup
from app.jobs.stream_slots import StreamSlots
from app.logs import configure_logging
from app.loop_lag import LoopLag
from app.media.copier import MediaWorker
from app.media.links import MediaLinks
from app.media.storage import MediaStorage
from app.openapi import build_openapi, operation_id
from app.outbound.signing import SecretBox
from app.outbound.worker import OutboundWorker
from app.ratelimit import RateLimitHeadersMiddleware, RateLimits
from app.request_limits import RequestLimitsMiddleware
from app.request_telemetry import RequestTelemetryMiddleware
from app.seedance.client import SeedanceClient
from app.sse import LiveStreams

DESCRIPTION = """
Create Seedance video jobs, follow them, and play the video from our own storage when
they are done (`video_url` and `poster_url` are short-lived signed URLs, fresh on every read).

Every request needs `Authorization: Bearer <JWT>`. Errors are `application/problem+json`
bodies with a stable `code` (and, for validation, the list of fields at fault).
"""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        http = SeedanceClient.create_http_client(settings)
        # identity providers' keys: their own client, with a short deadline (a request that
        # needs keys waits for it)
        identity_http = httpx.AsyncClient(
            timeout=settings.jwks_fetch_timeout_seconds, trust_env=False
        )
        app.state.verifier = verifier = TokenVerifier(settings, identity_http)
        prefetch = verifier.prefetch()
        sessionmaker = create_sessionmaker(engine)
        seedance = SeedanceClient(http, settings)
        rate_limits = RateLimits(settings)
        dispatcher = Dispatcher(sessionmaker, seedance, rate_limits, settings)
        storage = MediaStorage(settings)
        media_worker = MediaWorker(sessionmaker, storage, settings)
        links = MediaLinks(storage)
        outbound_secrets = SecretBox(settings.outbound_secrets_key)
        outbound_worker = OutboundWorker(sessionmaker, links, outbound_secrets, settings)
        loops: list[Loop] = []
        if settings.dispatcher_enabled:
            loops.append(dispatcher)
        if settings.reconciler_enabled:
            loops.append(Reconciler(sessionmaker, seedance, settings, media_worker.wake))
        if settings.media_worker_enabled:
            loops.append(media_worker)
        if settings.outbound_enabled:
            loops.append(outbound_worker)
        if settings.events_retention_days is not None:
            loops.append(RetentionSweeper(sessionmaker, settings))
        if settings.stats_rollup_enabled:
            loops.append(StatsRollup(sessionmaker, settings))
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.seedance = seedance
        app.state.rate_limits = rate_limits
        app.state.dispatcher = dispatcher if settings.dispatcher_enabled else None
        app.state.media_storage = storage
        app.state.media_links = links
        app.state.purger = media_worker.purger
        app.state.media_worker = media_worker if settings.media_worker_enabled else None
        app.state.migration_head = head_revision()
        app.state.outbound_secrets = outbound_secrets
        app.state.outbound_worker = outbound_worker if settings.outbound_enabled else None
        app.state.event_hub = hub = EventHub(sessionmaker)
        app.state.live_streams = live_streams = LiveStreams()
        app.state.loop_lag = loop_lag = LoopLag()
        loop_lag.start()
        app.state.stream_slots = StreamSlots(
            settings.sse_max_streams_per_user, settings.sse_max_streams_per_replica
        )
        if settings.outbound_enabled:
            hub.on_any(outbound_worker.on_move)
        if settings.is_sqlite:
            detach = publish_after_commit(sessionmaker, hub)
        else:
            app.state.event_listener = listener = PostgresListener(settings, hub)
            listener.start()
        for loop in loops:
            loop.start()
        freeze_startup_objects()
        try:
            with recording_pauses():
                yield
        finally:
            for loop in loops:
                await loop.stop()
            if settings.is_sqlite:
                detach()
            else:
                await listener.stop()
            await hub.close()
            await live_streams.stop()
            await loop_lag.stop()
            prefetch.cancel()
            await identity_http.aclose()
            await http.aclose()
            await media_worker.close()
            await outbound_worker.close()
            storage.close()
            await rate_limits.windows.aclose()
            await engine.dispose()

    app = FastAPI(
        title="seedance-bff",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        generate_unique_id_function=operation_id,
    )
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    app.state.settings = settings
    install_error_handlers(app)
    # added innermost first: CORS, rate-limit headers, size caps, request log, request id
    # (outermost: a refused oversized request is still logged with its request id)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["Location", "X-Request-ID", "Retry-After", "X-RateLimit-Remaining"],
        )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_request_body_bytes,
        max_header_bytes=settings.max_request_header_bytes,
    )
    app.add_middleware(RequestTelemetryMiddleware)
    app.add_middleware(
        CorrelationIdMiddleware,
        header_name="X-Request-ID",
        generator=lambda: uuid.uuid4().hex,
        validator=lambda value: bool(_REQUEST_ID.match(value)),
    )
    # the size caps of RequestLimitsMiddleware apply to every route
    size_errors = problem_responses(413, 431)
    routers = (jobs, media, batches, events, me, webhooks, admin, api_keys, webhook_endpoints)
    for module in (*routers, health):
        app.include_router(module.router, responses=size_errors)
    if settings.media_backend is MediaBackend.LOCAL:
        app.include_router(media.files_router, responses=size_errors)
    if (docs := docs_router(settings.effective_docs_access)) is not None:
        app.include_router(docs)
    if settings.effective_playground_enabled:
        app.mount("/playground", playground.playground_files(), name="playground")
    if not settings.is_production and settings.jwt_algorithm is JwtAlgorithm.HS256:
        app.include_router(playground.dev_router)
    return app
