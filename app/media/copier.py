"""The media worker: copies each video Seedance made into our storage, then moves its job
to `succeeded`; purges the media of deleted jobs; enforces MEDIA_RETENTION_DAYS.

A copy is durable work, claimed as the dispatcher claims (`FOR UPDATE SKIP LOCKED`), with
a lease (`media_next_attempt_at`): a copy cut by a crash or a SIGKILL is claimed again when
its lease runs out, and a worker whose lease was taken over records nothing (the claim's
attempt number no longer matches). Objects have fixed keys per job, so even a repeated
copy leaves one stored object. Transient failures (the result URL or our storage down,
a 404 that may be a CDN not yet warm) are retried with exponential backoff up to
MEDIA_COPY_MAX_ATTEMPTS; then, or at once for a file that can never be right (too large,
not a video, an unsafe redirect), the job fails with that code, its cost still counted.
"""

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import undone_if_cut, write_through_outage
from app.db.models import Job
from app.jobs.reports import end_deleted
from app.jobs.states import EventSource, JobStatus, MediaStatus, move
from app.kit.backoff import backoff
from app.kit.bounded_child import BoundedChildren
from app.kit.loops import PooledLoop
from app.media.download import MediaCopyError, download, refused, unavailable
from app.media.isolated_probe import probe_isolated
from app.media.keys import POSTER_CONTENT_TYPE, poster_key, video_key
from app.media.probe import Limits, NotAVideo, VideoFacts, mismatches
from app.media.purge import Purger
from app.moderation.output_stage import OutputJudgment, OutputModeration
from app.ops.metrics import MEDIA_COPIES
from app.storage.objects import ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CopyOrder:
    """What a claimed copy needs, read in the claim's transaction."""

    job_id: uuid.UUID
    attempt: int
    url: str
    resolution: str
    aspect_ratio: str
    duration: int
    owner: str
    prompt: str | None


@dataclass(frozen=True, slots=True)
class StoredCopy:
    content_type: str
    size: int
    sha256: str
    facts: VideoFacts
    mismatch: str | None


class MediaWorker(PooledLoop):
    name = "media"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        storage: ObjectStore,
        settings: Settings,
        children: BoundedChildren,
        output: OutputModeration | None = None,  # moderation's output stage; None: off
    ) -> None:
        super().__init__(settings.media_poll_seconds, settings.media_copy_concurrency)
        self._children = children
        self._output = output
        self._sessionmaker = sessionmaker
        self._storage = storage
        self._settings = settings
        self.purger = Purger(sessionmaker, storage, settings)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.media_read_timeout, connect=settings.media_connect_timeout
            ),
            follow_redirects=False,  # each hop is checked by `download`
            trust_env=False,
        )

    def start(self) -> None:
        self._storage.clean_staging(older_than_seconds=self._settings.media_copy_lease_seconds)
        super().start()

    async def close(self) -> None:
        await self._http.aclose()

    async def run_once(self) -> int:
        done = await self.purger.sweep_retention()
        done += await self.purger.purge()
        free = self.free_slots
        if free > 0:
            for order in await self._claim(free):
                self.spawn(self._copy(order), name=f"copy-{order.job_id}")
                done += 1
        return done

    def _lease(self) -> timedelta:
        return timedelta(seconds=self._settings.media_copy_lease_seconds)

    def _backoff(self, attempts: int) -> timedelta:
        settings = self._settings
        return backoff(
            attempts, settings.media_retry_backoff_seconds, settings.media_retry_backoff_max_seconds
        )

    async def _claim(self, limit: int) -> list[CopyOrder]:
        """Lease due copies; a claim cut by a database outage is undone once it answers
        (its copies are due again at once, not after the lease)."""
        now = datetime.now(UTC)
        orders: list[CopyOrder] = []

        async def release_unstarted() -> None:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(Job)
                    .where(
                        Job.id.in_([order.job_id for order in orders]),
                        Job.media_status == MediaStatus.PENDING,
                        Job.media_next_attempt_at == now + self._lease(),
                    )
                    .values(media_next_attempt_at=now, media_attempts=Job.media_attempts - 1)
                )

        async with undone_if_cut(release_unstarted, self._settings.media_copy_lease_seconds):
            await self._claim_in_one_transaction(now, limit, orders)
        return orders

    async def _claim_in_one_transaction(
        self, now: datetime, limit: int, orders: list[CopyOrder]
    ) -> None:
        async with self._sessionmaker() as session, session.begin():
            jobs = await session.scalars(
                select(Job)
                .where(
                    Job.media_status == MediaStatus.PENDING,
                    or_(Job.media_next_attempt_at.is_(None), Job.media_next_attempt_at <= now),
                )
                .order_by(Job.media_next_attempt_at.nulls_first(), Job.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            for job in jobs:
                if job.deleted_at is not None or job.upstream_video_url is None:
                    end_deleted(session, job, EventSource.MEDIA)  # (deleting forgets the URL)
                    continue
                job.media_attempts += 1
                job.media_next_attempt_at = now + self._lease()
                orders.append(
                    CopyOrder(
                        job.id,
                        job.media_attempts,
                        job.upstream_video_url,
                        job.resolution,
                        job.aspect_ratio,
                        job.duration,
                        job.owner,
                        job.prompt,
                    )
                )

    async def _copy(self, order: CopyOrder) -> None:
        deadline = self._settings.media_copy_lease_seconds * 0.9  # finish inside the lease
        try:
            async with asyncio.timeout(deadline):
                stored = await self.store_copy(order)
                judgment = await self._judge(order, stored)
        except MediaCopyError as exc:
            await self._record(partial(self._record_failure, order, exc), order)
        except TimeoutError:
            error = unavailable("the copy took too long")
            await self._record(partial(self._record_failure, order, error), order)
        except Exception as exc:  # storage errors: retried like the rest
            logger.warning("job %s: media copy failed: %s", order.job_id, type(exc).__name__)
            error = unavailable(f"storing the copy failed: {type(exc).__name__}")
            await self._record(partial(self._record_failure, order, error), order)
        else:
            await self._record(partial(self._record_success, order, stored, judgment), order)

    async def _record(self, outcome: Callable[[], Awaitable[None]], order: CopyOrder) -> None:
        """Write a copy's outcome, waiting out a database outage (a stored copy is not
        made again for a restart of Postgres). If the outage outlasts the claim's lease,
        the copy is simply made again (into the same keys): nothing is lost."""
        try:
            await write_through_outage(outcome, self._settings.media_copy_lease_seconds)
        except Exception:
            logger.exception("job %s: could not record copy %d", order.job_id, order.attempt)

    async def _judge(self, order: CopyOrder, stored: StoredCopy) -> OutputJudgment | None:
        """Moderation's output stage on the stored copy, before its job succeeds."""
        output, frames = self._output, stored.facts.sample_jpegs
        if output is None or not frames:
            return None
        return await output.judge(order.owner, order.job_id, order.prompt, frames)

    async def store_copy(self, order: CopyOrder) -> StoredCopy:
        """Download, check, probe and store one video and its poster (no database)."""
        name = f"{order.job_id}.{order.attempt}.{uuid.uuid4().hex[:8]}"
        staged = self._storage.staging_root / name
        try:
            got = await download(self._http, order.url, staged, self._settings)
            assert got.content_type is not None  # download refuses files it cannot type
            limits = Limits.for_job(order.resolution, order.duration)
            try:
                samples = self._output.frames if self._output else 0
                facts = await probe_isolated(
                    self._children, staged, limits, self._settings, samples
                )
            except NotAVideo as exc:
                raise refused("media_invalid", str(exc)) from exc
            key = video_key(order.job_id, got.content_type)
            await self._storage.store_staged(name, key, got.content_type)
        finally:
            await asyncio.to_thread(staged.unlink, missing_ok=True)
        poster = poster_key(order.job_id)
        await self._storage.put_bytes(poster, facts.poster_jpeg, POSTER_CONTENT_TYPE)
        mismatch = mismatches(
            facts,
            resolution=order.resolution,
            aspect_ratio=order.aspect_ratio,
            duration=order.duration,
        )
        return StoredCopy(got.content_type, got.size, got.sha256, facts, mismatch)

    async def _locked_if_still_ours(self, session: AsyncSession, order: CopyOrder) -> Job | None:
        """The job under its row lock, if this copy's claim still holds."""
        job = await session.get(Job, order.job_id, with_for_update=True, populate_existing=True)
        if (
            job is None
            or job.media_status != MediaStatus.PENDING
            or job.media_attempts != order.attempt
        ):
            logger.warning("job %s: copy attempt %d was superseded", order.job_id, order.attempt)
            return None
        return job

    async def _record_success(
        self, order: CopyOrder, stored: StoredCopy, judgment: OutputJudgment | None
    ) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await self._locked_if_still_ours(session, order)
            if job is None:
                return
            if job.deleted_at is not None:  # deleted while we copied: take it back
                end_deleted(session, job, EventSource.MEDIA)
                job.media_status = MediaStatus.PURGING
                self.wake()
                return
            facts = stored.facts
            job.media_status = MediaStatus.STORED
            job.media_next_attempt_at = None
            job.media_error = None
            job.media_content_type = stored.content_type
            job.media_bytes = stored.size
            job.media_sha256 = stored.sha256
            job.media_width, job.media_height = facts.width, facts.height
            job.media_duration, job.media_frame_rate = facts.duration, facts.frame_rate
            job.media_video_codec, job.media_has_audio = facts.video_codec, facts.has_audio
            job.media_mismatch = stored.mismatch
            job.media_stored_at = datetime.now(UTC)
            if self._output is not None and judgment is not None:
                await self._output.apply(session, job, judgment)
            if job.status == JobStatus.RUNNING:
                move(session, job, JobStatus.SUCCEEDED, EventSource.MEDIA)
        MEDIA_COPIES.labels("stored").inc()
        if stored.mismatch:
            logger.warning(
                "job %s: the video differs from the request: %s", order.job_id, stored.mismatch
            )

    async def _record_failure(self, order: CopyOrder, error: MediaCopyError) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await self._locked_if_still_ours(session, order)
            if job is None:
                return
            job.media_error = error.detail
            if error.retryable and job.media_attempts < self._settings.media_copy_max_attempts:
                job.media_next_attempt_at = datetime.now(UTC) + self._backoff(job.media_attempts)
                MEDIA_COPIES.labels("retry").inc()
                logger.warning(
                    "job %s: copy attempt %d failed (%s); retrying",
                    order.job_id,
                    order.attempt,
                    error.detail,
                )
                return
            job.media_status = MediaStatus.FAILED
            job.media_next_attempt_at = None
            MEDIA_COPIES.labels(error.code).inc()
            logger.error("job %s: the video cannot be copied: %s", order.job_id, error.detail)
            if job.status == JobStatus.RUNNING:
                job.error_code = error.code
                job.error_detail = error.detail
                move(session, job, JobStatus.FAILED, EventSource.MEDIA, detail=error.code)
