"""The application factory. The lifespan owns every long-lived resource of a process:
the database engine, the shared httpx client to Seedance, the rate-limit storage and
the background loops (stopped gracefully on shutdown, after in-flight requests)."""

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from types import ModuleType

import httpx
from asgi_correlation_id import CorrelationIdMiddleware
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Lifespan

from app.api.errors import install_error_handlers, problem_responses
from app.api.openapi import build_openapi, operation_id
from app.api.rate_limiting import RateLimitHeadersMiddleware
from app.api.request_limits import RequestLimitsMiddleware
from app.api.routes import (
    admin,
    admin_moderation,
    api_keys,
    batches,
    billing,
    credits,
    events,
    health,
    jobs,
    me,
    media,
    moderation,
    playground,
    seedance_callbacks,
    uploads,
    webhook_endpoints,
)
from app.api.routes.docs import docs_router
from app.api.sse import LiveStreams
from app.api.state import Services
from app.config import JwtAlgorithm, MediaBackend, Settings
from app.credits.wallet import LedgerWallet
from app.db.migrate import head_revision
from app.db.session import create_engine, create_sessionmaker
from app.identity.api_keys import KnownKeys, forget_subject
from app.identity.plans import Plans
from app.identity.verifier import TokenVerifier
from app.jobs.dispatcher import Dispatcher
from app.jobs.live.events import EventHub, PostgresListener, publish_after_commit
from app.jobs.live.queue_board import QueueBoard
from app.jobs.live.stream_slots import StreamSlots
from app.jobs.money import NoLedger
from app.jobs.reconciler import Reconciler
from app.jobs.retention import RetentionSweeper
from app.jobs.service import Checks, UserErasure
from app.jobs.stats import StatsRollup
from app.kit.bounded_child import BoundedChildren
from app.kit.loops import Loop
from app.media.copier import MediaWorker
from app.media.links import MediaLinks
from app.moderation.erasure import forget_moderation
from app.moderation.input_stage import InputModeration
from app.moderation.moderator import Moderator, build_provider
from app.moderation.output_stage import OutputModeration
from app.moderation.unchecked import UncheckedJobs
from app.ops.garbage_collection import freeze_startup_objects, managed_collections
from app.ops.logs import configure_logging
from app.ops.loop_lag import LoopLag
from app.ops.request_telemetry import RequestTelemetryMiddleware
from app.outbound.erasure import forget_messages
from app.outbound.retention import prune_finished_messages
from app.outbound.signing import SecretBox
from app.outbound.worker import OutboundWorker
from app.ratelimits.windows import RateLimits
from app.seedance.client import SeedanceClient
from app.storage.objects import ObjectStore
from app.uploads.inputs import UploadInputs
from app.uploads.links import UploadLinks
from app.uploads.removal import UploadRemover, UploadSweeper, forget_uploads
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
        async with AsyncExitStack() as stack:
            app.state.services = built = await _build_services(settings, stack)
            _start(built, _loops(settings, built), stack)
            freeze_startup_objects()
            with managed_collections(settings.gc_thaw_seconds):
                yield

    app = _new_app(settings, lifespan)
    _add_middleware(app, settings)
    _include_routers(app, settings)
    return app


async def _build_services(settings: Settings, stack: AsyncExitStack) -> Services:
    """Every long-lived object of the process. Each is closed by `stack` in the reverse of
    the order it was made in: the loops first, the engine last."""
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    sessionmaker = create_sessionmaker(engine)
    rate_limits = RateLimits(settings)
    stack.push_async_callback(rate_limits.windows.aclose)
    storage = ObjectStore(settings)
    stack.callback(storage.close)
    upload_links = UploadLinks(storage)
    upload_inputs = UploadInputs(storage, settings)
    upload_remover = UploadRemover(sessionmaker, storage)
    children = BoundedChildren()  # decoding untrusted files: uploads, results
    stack.push_async_callback(children.close)
    moderator = await _moderator(settings, stack)
    media_worker = MediaWorker(
        sessionmaker, storage, settings, children, OutputModeration(moderator, settings)
    )
    stack.push_async_callback(media_worker.close)
    links = MediaLinks(storage)
    outbound_secrets = SecretBox(settings.outbound_secrets_key)
    outbound_worker = OutboundWorker(sessionmaker, links, outbound_secrets, settings)
    stack.push_async_callback(outbound_worker.close)
    http = await stack.enter_async_context(SeedanceClient.create_http_client(settings))
    seedance = SeedanceClient(http, settings)
    verifier = await _verifier(settings, stack)
    loop_lag = LoopLag()
    stack.push_async_callback(loop_lag.stop)
    live_streams = LiveStreams()
    stack.push_async_callback(live_streams.stop)
    hub = EventHub(sessionmaker)
    stack.push_async_callback(hub.close)
    return Services(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        migration_head=head_revision(),
        verifier=verifier,
        known_keys=KnownKeys(sessionmaker),
        seedance=seedance,
        rate_limits=rate_limits,
        storage=storage,
        children=children,
        media_links=links,
        purger=media_worker.purger,
        uploads=Uploads(storage, upload_remover, settings, children),
        upload_links=upload_links,
        checks=Checks(
            inputs=upload_inputs,
            screen=InputModeration(moderator, sessionmaker, settings),
            wallet=LedgerWallet(Plans(settings)) if settings.credits_ledger else NoLedger(),
        ),
        moderator=moderator,
        upload_remover=upload_remover,
        erasure=UserErasure(
            forgetters=[forget_messages, forget_subject, forget_uploads, forget_moderation],
            file_removals={"media": media_worker.purger, "uploads": upload_remover},
        ),
        outbound_secrets=outbound_secrets,
        event_hub=hub,
        event_listener=None if settings.is_sqlite else PostgresListener(settings, hub),
        queue_board=QueueBoard(sessionmaker, settings, hub),
        live_streams=live_streams,
        stream_slots=StreamSlots(
            settings.sse_max_streams_per_user, settings.sse_max_streams_per_replica
        ),
        loop_lag=loop_lag,
        dispatcher=Dispatcher(sessionmaker, seedance, rate_limits, settings, upload_inputs),
        media_worker=media_worker,
        outbound_worker=outbound_worker,
    )


async def _moderator(settings: Settings, stack: AsyncExitStack) -> Moderator:
    """The moderation provider, with its own client (its deadline is the Moderator's)."""
    http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=settings.moderation_timeout_seconds, trust_env=False)
    )
    return Moderator(build_provider(settings, http), settings)


async def _verifier(settings: Settings, stack: AsyncExitStack) -> TokenVerifier:
    """Identity providers' keys: their own client, with a short deadline (a request that
    needs keys waits for it), fetched in the background from the start."""
    identity_http = await stack.enter_async_context(
        httpx.AsyncClient(timeout=settings.jwks_fetch_timeout_seconds, trust_env=False)
    )
    verifier = TokenVerifier(settings, identity_http)
    stack.callback(verifier.prefetch().cancel)
    return verifier


def _loops(settings: Settings, built: Services) -> list[Loop]:
    """The background loops this process runs (ROLE=api runs none but the queue board);
    the kinds it does not run are set to None on `built`."""
    work = settings.runs_loops
    sessionmaker, hub = built.sessionmaker, built.event_hub
    assert built.dispatcher and built.media_worker and built.outbound_worker
    loops: list[Loop] = []
    if work and settings.dispatcher_enabled:
        loops.append(built.dispatcher)
        hub.on_slot_freed(built.dispatcher.wake)  # the next job may go at once
    if work and settings.reconciler_enabled:
        wake_copier = built.media_worker.wake
        loops.append(Reconciler(sessionmaker, built.seedance, settings, wake_copier))
    if work and settings.media_worker_enabled:
        loops.append(built.media_worker)
    if work and settings.outbound_enabled:
        loops.append(built.outbound_worker)
        hub.on_any(built.outbound_worker.on_move)
    if work and settings.events_retention_days is not None:
        loops.append(RetentionSweeper(sessionmaker, settings, [prune_finished_messages]))
    if work:
        loops.append(UploadSweeper(built.upload_remover, settings))
        fetch_urls = built.checks.inputs.fetch_urls
        loops.append(UncheckedJobs(sessionmaker, built.moderator, settings, fetch_urls))
    if work and settings.stats_rollup_enabled:
        loops.append(StatsRollup(sessionmaker, settings))
    if settings.serves_api:  # places in line for the answers and live streams served here
        loops.append(built.queue_board)
        hub.on_notice(built.queue_board.note)
    built.dispatcher = built.dispatcher if built.dispatcher in loops else None
    built.media_worker = built.media_worker if built.media_worker in loops else None
    built.outbound_worker = built.outbound_worker if built.outbound_worker in loops else None
    return loops


def _start(built: Services, loops: list[Loop], stack: AsyncExitStack) -> None:
    """Start the loop-lag probe, the event feed and the loops; `stack` stops them first
    (the loops in the order they started), before the objects they use are closed."""
    built.loop_lag.start()
    if built.event_listener is None:
        stack.callback(publish_after_commit(built.sessionmaker, built.event_hub))
    else:
        built.event_listener.start()
        stack.push_async_callback(built.event_listener.stop)
    for loop in reversed(loops):
        stack.push_async_callback(loop.stop)
    for loop in loops:
        loop.start()


def _new_app(settings: Settings, lifespan: Lifespan[FastAPI]) -> FastAPI:
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
    # FastAPI's documented way to customize the document is to replace this method
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
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


def _include_routers(app: FastAPI, settings: Settings) -> None:
    # the size caps of RequestLimitsMiddleware apply to every route
    size_errors = problem_responses(413, 431)
    routers: tuple[ModuleType, ...] = (
        jobs,
        moderation,
        credits,
        billing,
        uploads,
        media,
        batches,
        events,
        me,
        seedance_callbacks,
        admin,
        admin_moderation,
        api_keys,
        webhook_endpoints,
    )
    if not settings.serves_api:  # a worker: probes and metrics only
        routers = ()
    for module in (*routers, health):
        app.include_router(module.router, responses=size_errors)
    if not settings.serves_api:
        return
    if settings.media_backend is MediaBackend.LOCAL:
        app.include_router(media.files_router, responses=size_errors)
    if (docs := docs_router(settings.effective_docs_access)) is not None:
        app.include_router(docs)
    if settings.effective_playground_enabled:
        app.mount("/playground", playground.playground_files(), name="playground")
    if settings.effective_review_page_enabled:
        app.mount("/review", playground.playground_files(playground.REVIEW_DIR), name="review")
    if not settings.is_production and settings.jwt_algorithm is JwtAlgorithm.HS256:
        app.include_router(playground.dev_router)


if __name__ == "__main__":  # `python -m app.main`: the OpenAPI document clients are generated from
    import json

    print(json.dumps(create_app(Settings(_env_file=None)).openapi(), indent=2))
