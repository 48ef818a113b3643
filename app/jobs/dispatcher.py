"""Hands queued jobs to Seedance, each at most once, under a cap on in-flight submissions.

A claim commits `submit_started_at` before the upstream call, so a crash or a timeout
after sending leaves the job marked "outcome unknown": it is never re-sent, and waits for
its callback (which names our job) until the reconciler's grace period runs out. The claim
is cleared, for a later retry with backoff, only when the call certainly created nothing
upstream (connection refused, 429, 5xx). Claims use `FOR UPDATE SKIP LOCKED`, so several
replicas can run dispatchers against one Postgres database.
"""

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import write_through_outage
from app.db.models import Job
from app.jobs.callbacks import callback_url
from app.jobs.reports import mark_submitted
from app.jobs.states import EventSource, JobStatus, move
from app.kit.backoff import backoff
from app.kit.loops import PooledLoop
from app.ops.metrics import JOB_SUBMISSIONS
from app.ratelimits.windows import RateLimits
from app.seedance.client import (
    GenerateRequest,
    InsufficientCredits,
    OutcomeUnknown,
    SeedanceClient,
    SeedanceError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTransient,
)

logger = logging.getLogger(__name__)
_PERMANENT = (UpstreamRejected, InsufficientCredits, UpstreamProtocolError)
_NOT_SENT = (UpstreamRateLimited, UpstreamTransient, UpstreamAuthError)


class Dispatcher(PooledLoop):
    name = "dispatcher"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: SeedanceClient,
        rate_limits: RateLimits,
        settings: Settings,
    ) -> None:
        super().__init__(settings.dispatcher_poll_seconds, settings.dispatcher_max_in_flight)
        self._sessionmaker = sessionmaker
        self._client = client
        self._rate_limits = rate_limits
        self._settings = settings

    async def run_once(self) -> int:
        """Claim as many due jobs as there are free slots and start submitting them
        (submissions already sent finish on stop, so their outcome is recorded)."""
        free = self.free_slots
        if free <= 0:
            return 0
        for job_id, request in await self._claim(free):
            self.spawn(self._submit(job_id, request), name=f"submit-{job_id}")
        return free

    async def _claim(self, limit: int) -> list[tuple[uuid.UUID, GenerateRequest]]:
        """Mark due jobs as being submitted and build their upstream requests in the same
        transaction: between the claim and the call, nothing can fail on the database."""
        now = datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            jobs = await session.scalars(
                select(Job)
                .where(
                    Job.status == JobStatus.QUEUED,
                    Job.submit_started_at.is_(None),
                    or_(Job.next_attempt_at.is_(None), Job.next_attempt_at <= now),
                )
                .order_by(Job.created_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            claimed = []
            for job in jobs:
                job.submit_started_at = now
                job.submit_attempts += 1
                claimed.append((job.id, self._request_for(job)))
        return claimed

    def _request_for(self, job: Job) -> GenerateRequest:
        return GenerateRequest(
            model=job.model,
            prompt=job.prompt,
            duration=job.duration,
            resolution=job.resolution,
            aspect_ratio=job.aspect_ratio,
            images=job.images,
            reference_video_urls=job.reference_video_urls,
            reference_audio_urls=job.reference_audio_urls,
            callback_url=callback_url(self._settings, job.id),
        )

    async def _submit(self, job_id: uuid.UUID, request: GenerateRequest) -> None:
        await self._rate_limits.wait_for_submit_slot()
        try:
            task_id = await self._client.generate(request)
        except OutcomeUnknown as exc:
            JOB_SUBMISSIONS.labels("unknown").inc()
            logger.warning("job %s: submit outcome unknown (%s); waiting for callback", job_id, exc)
        except _PERMANENT as exc:
            JOB_SUBMISSIONS.labels("rejected").inc()
            await self._record("rejection", self._fail, job_id, exc)
        except _NOT_SENT as exc:
            JOB_SUBMISSIONS.labels("retry").inc()
            await self._record("retry", self._retry_later, job_id, exc)
        except Exception:
            JOB_SUBMISSIONS.labels("unknown").inc()
            logger.exception("job %s: unexpected error while submitting; outcome unknown", job_id)
        else:
            JOB_SUBMISSIONS.labels("accepted").inc()
            await self._record(f"task {task_id}", self._accepted, job_id, task_id)

    async def _record(
        self,
        what: str,
        write: Callable[..., Awaitable[None]],
        job_id: uuid.UUID,
        *args: object,
    ) -> None:
        """Write a submission's outcome, waiting out a database outage: once Seedance has
        answered, its answer (above all a task id, a video already paid for) exists only
        in this process until it is written. Gives up after the unknown-outcome grace;
        the job is then an unknown outcome, found again by its callback."""
        try:
            await write_through_outage(
                lambda: write(job_id, *args), self._settings.submit_unknown_grace_seconds
            )
        except Exception:
            logger.exception("job %s: could not record the submission's %s", job_id, what)

    async def _accepted(self, job_id: uuid.UUID, task_id: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True)
            assert job is not None
            if job.upstream_task_id == task_id:
                return  # its callback arrived first and attached the task already
            if job.status != JobStatus.QUEUED or job.upstream_task_id is not None:
                logger.error(
                    "job %s: Seedance accepted task %s but the job is %s with task %s",
                    job_id,
                    task_id,
                    job.status,
                    job.upstream_task_id,
                )
                return
            mark_submitted(self._settings, job, task_id)
            move(session, job, JobStatus.RUNNING, EventSource.DISPATCHER)

    async def _fail(self, job_id: uuid.UUID, error: SeedanceError) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True)
            assert job is not None
            if job.status != JobStatus.QUEUED:
                return
            job.error_code = error.code
            job.error_detail = error.detail
            move(session, job, JobStatus.FAILED, EventSource.DISPATCHER, detail=error.code)

    async def _retry_later(self, job_id: uuid.UUID, error: SeedanceError) -> None:
        """The request created nothing upstream: clear the claim and try again later."""
        if isinstance(error, UpstreamAuthError):
            logger.error(
                "Seedance refused our API key (HTTP %s); jobs wait for an operator", error.status
            )
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True)
            assert job is not None
            if job.status != JobStatus.QUEUED or job.upstream_task_id is not None:
                return
            if job.submit_attempts >= self._settings.dispatcher_max_submit_attempts:
                job.error_code = "upstream_unavailable"
                attempts = job.submit_attempts
                job.error_detail = (
                    f"Seedance did not take the job in {attempts} tries: {error.detail}"
                )
                move(session, job, JobStatus.FAILED, EventSource.DISPATCHER, detail=error.code)
                return
            delay = backoff(
                job.submit_attempts, self._settings.dispatcher_retry_backoff_seconds
            ).total_seconds()
            if isinstance(error, UpstreamRateLimited) and error.retry_after:
                delay = max(delay, error.retry_after)
            job.submit_started_at = None
            job.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
