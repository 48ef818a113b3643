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

from app.api.errors import install_error_handlers, problem_responses
from app.api.openapi import build_openapi, operation_id
from app.api.rate_limiting import RateLimitHeadersMiddleware
from app.api.request_limits import RequestLimitsMiddleware
from app.api.routes import (
    admin,
    api_keys,
    batches,
    events,
    health,
    jobs,
    me,
    media,
    playground,
    seedance_callbacks,
    uploads,
    webhook_endpoints,
)
from app.api.routes.docs import docs_router
from app.api.sse import LiveStreams
from app.api.state import Services
from app.config import JwtAlgorithm, MediaBackend, Settings
from app.db.migrate import head_revision
from app.db.session import create_engine, create_sessionmaker
from app.identity.verifier import TokenVerifier
from app.jobs.dispatcher import Dispatcher
from app.jobs.live.events import EventHub, PostgresListener, publish_after_commit
from app.jobs.live.queue_board import QueueBoard
from app.jobs.live.stream_slots import StreamSlots
from app.jobs.reconciler import Reconciler
from app.jobs.retention import RetentionSweeper
from app.jobs.stats import StatsRollup
from app.kit.loops import Loop
from app.media.copier import MediaWorker
from app.media.links import MediaLinks
from app.media.storage import MediaStorage
from app.ops.garbage_collection import freeze_startup_objects, recording_pauses
from app.ops.logs import configure_logging
from app.ops.loop_lag import LoopLag
from app.ops.request_telemetry import RequestTelemetryMiddleware
from app.outbound.retention import prune_finished_messages
from app.outbound.signing import SecretBox
from app.outbound.worker import OutboundWorker
from app.ratelimits.windows import RateLimits
from app.seedance.client import SeedanceClient
from app.uploads.links import UploadLinks
from app.uploads.removal import UploadRemover, UploadSweeper
from app.uploads.service import Uploads

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
        verifier = TokenVerifier(settings, identity_http)
        prefetch = verifier.prefetch()
        sessionmaker = create_sessionmaker(engine)
        seedance = SeedanceClient(http, settings)
        rate_limits = RateLimits(settings)
        storage = MediaStorage(settings)
        upload_links = UploadLinks(storage, settings)
        upload_remover = UploadRemover(sessionmaker, storage)
        dispatcher = Dispatcher(sessionmaker, seedance, rate_limits, settings, upload_links)
        media_worker = MediaWorker(sessionmaker, storage, settings)
        links = MediaLinks(storage)
        outbound_secrets = SecretBox(settings.outbound_secrets_key)
        outbound_worker = OutboundWorker(sessionmaker, links, outbound_secrets, settings)
        hub = EventHub(sessionmaker)
        work = settings.runs_loops  # ROLE=api runs none of the loops
        loops: list[Loop] = []
        if work and settings.dispatcher_enabled:
            loops.append(dispatcher)
            hub.on_slot_freed(dispatcher.wake)  # the next job may go at once
        if work and settings.reconciler_enabled:
            loops.append(Reconciler(sessionmaker, seedance, settings, media_worker.wake))
        if work and settings.media_worker_enabled:
            loops.append(media_worker)
        if work and settings.outbound_enabled:
            loops.append(outbound_worker)
            hub.on_any(outbound_worker.on_move)
        if work and settings.events_retention_days is not None:
            loops.append(RetentionSweeper(sessionmaker, settings, [prune_finished_messages]))
        if work:
            loops.append(UploadSweeper(upload_remover, settings))
        if work and settings.stats_rollup_enabled:
            loops.append(StatsRollup(sessionmaker, settings))
        queue_board = QueueBoard(sessionmaker, settings, hub)
        if settings.serves_api:  # places in line for the live streams served here
            loops.append(queue_board)
        listener = None if settings.is_sqlite else PostgresListener(settings, hub)
        app.state.services = built = Services(
            settings=settings,
            engine=engine,
            sessionmaker=sessionmaker,
            migration_head=head_revision(),
            verifier=verifier,
            seedance=seedance,
            rate_limits=rate_limits,
            media_storage=storage,
            media_links=links,
            purger=media_worker.purger,
            uploads=Uploads(storage, upload_remover, settings),
            upload_links=upload_links,
            upload_remover=upload_remover,
            outbound_secrets=outbound_secrets,
            event_hub=hub,
            event_listener=listener,
            queue_board=queue_board,
            live_streams=LiveStreams(),
            stream_slots=StreamSlots(
                settings.sse_max_streams_per_user, settings.sse_max_streams_per_replica
            ),
            loop_lag=LoopLag(),
            dispatcher=dispatcher if dispatcher in loops else None,
            media_worker=media_worker if media_worker in loops else None,
            outbound_worker=outbound_worker if outbound_worker in loops else None,
        )
        built.loop_lag.start()
        if listener is None:
            detach = publish_after_commit(sessionmaker, hub)
        else:
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
            if listener is None:
                detach()
            else:
                await listener.stop()
            await hub.close()
            await built.live_streams.stop()
            await built.loop_lag.stop()
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
        larger_bodies={("POST", "/uploads"): settings.upload_request_max_bytes},
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
    routers = (
        jobs,
        uploads,
        media,
        batches,
        events,
        me,
        seedance_callbacks,
        admin,
        api_keys,
        webhook_endpoints,
    )
    if not settings.serves_api:  # a worker: probes and metrics only
        routers = ()
    for module in (*routers, health):
        app.include_router(module.router, responses=size_errors)
    if not settings.serves_api:
        return app
    if settings.media_backend is MediaBackend.LOCAL:
        app.include_router(media.files_router, responses=size_errors)
    if (docs := docs_router(settings.effective_docs_access)) is not None:
        app.include_router(docs)
    if settings.effective_playground_enabled:
        app.mount("/playground", playground.playground_files(), name="playground")
    if not settings.is_production and settings.jwt_algorithm is JwtAlgorithm.HS256:
        app.include_router(playground.dev_router)
    return app


if __name__ == "__main__":  # `python -m app.main`: the OpenAPI document clients are generated from
    import json

    print(json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2))  # type: ignore[call-arg]
