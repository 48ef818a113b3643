"""Hands queued jobs to Seedance, each at most once, in the order and within the account's
cap that the scheduler (app/jobs/scheduler.py) decides, under a cap on in-flight submit
calls per process.

A claim commits `submit_started_at` before the upstream call, so a crash or a timeout
after sending leaves the job marked "outcome unknown": it is never re-sent, and waits for
its callback (which names our job) until the reconciler's grace period runs out. The claim
is cleared, for a later retry with backoff, only when the call certainly created nothing
upstream (connection refused, 429, 5xx). Claims are serialized across replicas by the
scheduler's lock (and rows taken `FOR UPDATE SKIP LOCKED`), so several replicas can run
dispatchers against one Postgres database.

A 429 means the account is full now: the job goes back to the queue as it was (it does not
count as an attempt, its backoff does not grow, and it never fails the job), and the
scheduler learns the account's cap. A job that waits past QUEUE_MAX_WAIT_SECONDS fails
`queue_timeout` before it costs anything.
"""

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import undone_if_cut, write_through_outage
from app.db.models import Job
from app.identity.plans import Plans
from app.jobs import inputs, scheduler
from app.jobs.callbacks import callback_url
from app.jobs.refusals import fail_refused
from app.jobs.reports import mark_submitted
from app.jobs.schemas import URL_LISTS, job_parameters
from app.jobs.states import EventSource, JobStatus, move
from app.kit.backoff import backoff
from app.kit.loops import PooledLoop
from app.ops.metrics import (
    JOB_SUBMISSIONS,
    QUEUE_WAIT,
    UPSTREAM_CAP,
    UPSTREAM_RATE_LIMITED,
    UPSTREAM_SLOTS_IN_USE,
)
from app.ratelimits.windows import RateLimits
from app.seedance.client import (
    ContentRefused,
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
_PERMANENT = (UpstreamRejected, UpstreamProtocolError)
_NOT_SENT = (UpstreamRateLimited, UpstreamTransient)
# the account cannot work, whatever the job: dispatch pauses for everyone, no job fails
_ACCOUNT = {
    InsufficientCredits: scheduler.PauseReason.OUT_OF_CREDITS,
    UpstreamAuthError: scheduler.PauseReason.KEY_REJECTED,
}
QUEUE_TIMEOUT = "queue_timeout"
INPUT_UNAVAILABLE = "input_unavailable"
EXPIRE_BATCH = 100
EXPIRY_SECONDS = 1.0  # jobs that waited too long are looked for this often, not every round


class Dispatcher(PooledLoop):
    name = "dispatcher"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: SeedanceClient,
        rate_limits: RateLimits,
        settings: Settings,
        job_inputs: inputs.Inputs,
    ) -> None:
        super().__init__(settings.dispatcher_poll_seconds, settings.dispatcher_max_in_flight)
        self._sessionmaker = sessionmaker
        self._inputs = job_inputs
        self._client = client
        self._rate_limits = rate_limits
        self._settings = settings
        self._plans = Plans(settings)
        self._next_expiry = 0.0  # when to look for jobs that waited too long

    async def run_once(self) -> int:
        """Fail jobs that waited too long, then claim what the scheduler sends now (at
        most this process's free submit slots) and start submitting it (submissions
        already sent finish on stop, so their outcome is recorded)."""
        expired = 0
        if time.monotonic() >= self._next_expiry:
            self._next_expiry = time.monotonic() + EXPIRY_SECONDS
            expired = await self._expire_waits()
        free = self.free_slots
        if free <= 0:
            return expired
        claimed = await self._claim(free)
        for job_id, request in claimed:
            self.spawn(self._submit(job_id, request), name=f"submit-{job_id}")
        return expired + len(claimed)

    async def _claim(self, limit: int) -> list[tuple[uuid.UUID, GenerateRequest]]:
        """Mark the scheduler's picks as being submitted and build their upstream requests
        in the same transaction: between the claim and the call, nothing can fail on the
        database. A claim whose commit was cut by a database outage may have landed, and
        nothing was sent for it: it is undone once the database answers (else its jobs
        would wait as unknown outcomes, and fail, for a blink of our own database)."""
        now = datetime.now(UTC)
        claimed: list[tuple[uuid.UUID, GenerateRequest]] = []

        async def release_unsent() -> None:
            async with self._sessionmaker() as session, session.begin():
                await session.execute(
                    update(Job)
                    .where(
                        Job.id.in_([job_id for job_id, _ in claimed]),
                        Job.submit_started_at == now,
                        Job.upstream_task_id.is_(None),
                    )
                    .values(submit_started_at=None, submit_attempts=Job.submit_attempts - 1)
                )

        async with undone_if_cut(release_unsent, self._settings.submit_unknown_grace_seconds):
            await self._claim_in_one_transaction(limit, now, claimed)
        return claimed

    async def _claim_in_one_transaction(
        self, limit: int, now: datetime, claimed: list[tuple[uuid.UUID, GenerateRequest]]
    ) -> None:
        async with self._sessionmaker() as session, session.begin():
            await scheduler.serialize_claims(session)
            ids, account = await scheduler.pick(session, self._settings, self._plans, limit)
            if account is not None:
                UPSTREAM_SLOTS_IN_USE.set(account.in_use)
                UPSTREAM_CAP.set(account.cap or 0)
            if not ids:
                return
            jobs = {
                job.id: job
                for job in await session.scalars(
                    select(Job)
                    .where(Job.id.in_(ids), *scheduler.waiting(now))
                    .with_for_update(skip_locked=True)
                )
            }
            named = {upload_id for job in jobs.values() for upload_id in inputs.references(job)}
            urls = await self._inputs.fetch_urls(session, named)
            for job in (jobs[job_id] for job_id in ids if job_id in jobs):
                if missing := [i for i in inputs.references(job) if i not in urls]:
                    self._fail_unsent(session, job, f"upload {missing[0]} was removed")
                    continue
                job.submit_started_at = now
                job.submit_attempts += 1
                claimed.append((job.id, self._request_for(job, urls)))

    @staticmethod
    def _fail_unsent(session: AsyncSession, job: Job, detail: str) -> None:
        job.error_code = INPUT_UNAVAILABLE
        job.error_detail = f"{detail}; nothing was sent or charged"
        move(session, job, JobStatus.FAILED, EventSource.DISPATCHER, detail=INPUT_UNAVAILABLE)

    async def _expire_waits(self) -> int:
        """Waiting jobs older than QUEUE_MAX_WAIT_SECONDS fail `queue_timeout`: never sent,
        so they cost nothing."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self._settings.queue_max_wait_seconds)
        async with self._sessionmaker() as session, session.begin():
            jobs = list(
                await session.scalars(
                    select(Job)
                    .where(
                        Job.status == JobStatus.QUEUED,
                        Job.submit_started_at.is_(None),
                        Job.created_at < cutoff,
                    )
                    .limit(EXPIRE_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in jobs:
                job.error_code = QUEUE_TIMEOUT
                job.error_detail = (
                    f"No slot of the Seedance account came free within "
                    f"{self._settings.queue_max_wait_seconds:g} seconds; nothing was charged."
                )
                move(session, job, JobStatus.FAILED, EventSource.DISPATCHER, detail=QUEUE_TIMEOUT)
        return len(jobs)

    def _request_for(self, job: Job, upload_urls: dict[uuid.UUID, str]) -> GenerateRequest:
        """Seedance's request: each upload a signed URL it can fetch while the task runs."""

        def urls(values: list[str]) -> list[str]:
            return [
                upload_urls[inputs.upload_id_of(v)] if inputs.is_reference(v) else v for v in values
            ]

        return GenerateRequest(
            **job_parameters(job) | {name: urls(getattr(job, name)) for name in URL_LISTS},
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
        except (InsufficientCredits, UpstreamAuthError) as exc:
            JOB_SUBMISSIONS.labels("paused").inc()
            await self._record("pause", self._pause_account, job_id, exc)
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
            if await scheduler.resume(session):
                logger.warning("Seedance accepted a job again: dispatch resumed")
            assert job.submitted_at is not None  # set by mark_submitted
            QUEUE_WAIT.observe((job.submitted_at - job.created_at).total_seconds())
            await session.flush()
            await scheduler.learn_accepted(session)

    async def _fail(self, job_id: uuid.UUID, error: SeedanceError) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True)
            assert job is not None
            if job.status != JobStatus.QUEUED:
                return
            if isinstance(error, ContentRefused):
                fail_refused(
                    session, self._settings, job, error.stage, error.detail, EventSource.DISPATCHER
                )
                return
            job.error_code = error.code
            job.error_detail = error.detail
            move(session, job, JobStatus.FAILED, EventSource.DISPATCHER, detail=error.code)

    async def _retry_later(self, job_id: uuid.UUID, error: SeedanceError) -> None:
        """The request created nothing upstream: clear the claim and try again later (a
        429: as soon as the account has room, the attempt not counted)."""
        if isinstance(error, UpstreamRateLimited):
            await self._back_in_line(job_id, error)
            return
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
            delay = backoff(job.submit_attempts, self._settings.dispatcher_retry_backoff_seconds)
            job.submit_started_at = None
            job.next_attempt_at = datetime.now(UTC) + delay

    async def _pause_account(self, job_id: uuid.UUID, error: SeedanceError) -> None:
        """Seedance's 402 (the account is out of credits) or our key refused: the job waits
        in its place (the refusal is not one of its attempts) and dispatch pauses for
        everyone until a probe is accepted; QUEUE_MAX_WAIT_SECONDS still bounds each wait."""
        reason = _ACCOUNT[type(error)]
        async with self._sessionmaker() as session, session.begin():
            await _back_in_its_place(session, job_id)
            started = await scheduler.pause(session, self._settings, reason)
        if started:
            logger.error(
                "Seedance answered HTTP %s (%s): dispatch paused for everyone; a probe every "
                "%g s resumes it",
                error.status,
                reason.value,
                self._settings.account_probe_seconds,
            )

    async def _back_in_line(self, job_id: uuid.UUID, error: UpstreamRateLimited) -> None:
        """The account is full: the job waits in its place as before, and the scheduler
        holds submissions until a slot frees or the account's Retry-After passes."""
        UPSTREAM_RATE_LIMITED.inc()
        async with self._sessionmaker() as session, session.begin():
            await _back_in_its_place(session, job_id)
            await session.flush()
            await scheduler.learn_rate_limited(
                session, self._settings, error.retry_after, datetime.now(UTC)
            )


async def _back_in_its_place(session: AsyncSession, job_id: uuid.UUID) -> None:
    """A submission the account refused for itself (full, out of credits, key refused): the
    job waits in its place again, and the refusal is not one of its attempts."""
    job = await session.get(Job, job_id, with_for_update=True)
    assert job is not None
    if job.status == JobStatus.QUEUED and job.upstream_task_id is None:
        job.submit_started_at = None
        job.submit_attempts -= 1
