"""What a process builds once and its routers use, as one typed object.

`create_app`'s lifespan builds `Services` and sets it as `app.state.services`; routers
reach it through `services(request)`, so every use is checked against these types
instead of reading untyped attributes of Starlette's `State`."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.api.sse import LiveStreams
from app.config import Settings
from app.db.models import Job
from app.identity.api_keys import KnownKeys
from app.identity.verifier import TokenVerifier
from app.jobs.dispatcher import Dispatcher
from app.jobs.live.events import EventHub, PostgresListener
from app.jobs.live.queue_board import QueueBoard
from app.jobs.live.stream_slots import StreamSlots
from app.jobs.schemas import JobOut
from app.jobs.service import Checks, UserErasure
from app.kit.bounded_child import BoundedChildren
from app.media.copier import MediaWorker
from app.media.links import MediaLinks
from app.media.purge import Purger
from app.moderation.moderator import Moderator
from app.ops.loop_lag import LoopLag
from app.outbound.signing import SecretBox
from app.outbound.worker import OutboundWorker
from app.ratelimits.windows import RateLimits
from app.seedance.client import SeedanceClient
from app.storage.objects import ObjectStore
from app.uploads.links import UploadLinks
from app.uploads.removal import UploadRemover
from app.uploads.service import Uploads

Out = TypeVar("Out", bound=JobOut)


@dataclass(slots=True, kw_only=True)
class Services:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    migration_head: str | None
    verifier: TokenVerifier
    known_keys: KnownKeys
    seedance: SeedanceClient
    rate_limits: RateLimits
    storage: ObjectStore
    children: BoundedChildren  # decoding untrusted files
    media_links: MediaLinks
    purger: Purger
    uploads: Uploads
    upload_links: UploadLinks
    checks: Checks  # what a create passes: its uploads, moderation's input stage
    moderator: Moderator
    upload_remover: UploadRemover
    erasure: UserErasure
    outbound_secrets: SecretBox
    event_hub: EventHub
    event_listener: PostgresListener | None  # None on SQLite (in-process fan-out)
    queue_board: QueueBoard
    live_streams: LiveStreams
    stream_slots: StreamSlots
    loop_lag: LoopLag
    # the loops this process runs; None where it runs none of that kind
    dispatcher: Dispatcher | None
    media_worker: MediaWorker | None
    outbound_worker: OutboundWorker | None

    @overload
    async def present(self, jobs: Sequence[Job]) -> list[JobOut]: ...
    @overload
    async def present(self, jobs: Sequence[Job], model: type[Out]) -> list[Out]: ...
    async def present(self, jobs: Sequence[Job], model: type[JobOut] = JobOut) -> list[Any]:
        """Jobs as their owner sees them: fresh signed URLs of their media, and their
        places in the queue while they wait."""
        outs = [self.media_links.job_out(job, model) for job in jobs]
        return await self.queue_board.place(outs, jobs)


def services(request: Request) -> Services:
    built: Services = request.app.state.services
    return built
