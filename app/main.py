"""The application factory. The lifespan owns every long-lived resource of a process:
the database engine, the shared httpx client to Seedance, and the background loops."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import health, jobs, me, webhooks
from app.config import Settings
from app.db.session import create_engine, create_sessionmaker
from app.errors import install_error_handlers
from app.jobs.background import Loop
from app.jobs.dispatcher import Dispatcher
from app.jobs.reconciler import Reconciler
from app.ratelimit import RateLimitHeadersMiddleware, RateLimits
from app.seedance.client import SeedanceClient

logger = logging.getLogger(__name__)

DESCRIPTION = """
Create Seedance video jobs, follow them, and get the video URL when they are done.

Every request needs `Authorization: Bearer <JWT>`. Errors are `application/problem+json`
bodies with a stable `code` (and, for validation, the list of fields at fault).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        http = SeedanceClient.create_http_client(settings)
        sessionmaker = create_sessionmaker(engine)
        seedance = SeedanceClient(http, settings)
        rate_limits = RateLimits(settings)
        dispatcher = Dispatcher(sessionmaker, seedance, rate_limits, settings)
        loops: list[Loop] = []
        if settings.dispatcher_enabled:
            loops.append(dispatcher)
        if settings.reconciler_enabled:
            loops.append(Reconciler(sessionmaker, seedance, settings))
        app.state.engine = engine
        app.state.sessionmaker = sessionmaker
        app.state.seedance = seedance
        app.state.rate_limits = rate_limits
        app.state.dispatcher = dispatcher if settings.dispatcher_enabled else None
        for loop in loops:
            loop.start()
        try:
            yield
        finally:
            for loop in loops:
                await loop.stop()
            await http.aclose()
            await engine.dispose()

    app = FastAPI(
        title="seedance-bff",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(RateLimitHeadersMiddleware)
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location"],
        )
    app.include_router(jobs.router)
    app.include_router(me.router)
    app.include_router(webhooks.router)
    app.include_router(health.router)
    return app
