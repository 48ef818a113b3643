"""The safety net for lost callbacks: polls upstream only for jobs whose callback is late.

A running job becomes due `callback_overdue_seconds(duration)` after submission; each
poll pushes its next one back exponentially, and all polls share a global rate cap.
Jobs still unknown past their deadline fail with `upstream_timeout`: running jobs after
JOB_HARD_DEADLINE_SECONDS (once a last status call says they are still not done), jobs
whose submit outcome is unknown (no task id to ask about) after
SUBMIT_UNKNOWN_GRACE_SECONDS without a callback. Time our own database was away does not
count against a job: callbacks, polls and the dispatcher's writes could not land then, so
the deadlines move back by the last outage this loop saw. Claims use SKIP LOCKED, so
replicas share the work.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiolimiter import AsyncLimiter
from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.availability import is_database_unavailable
from app.db.models import Job
from app.jobs.reports import ApplyResult, apply_report
from app.jobs.states import EventSource, JobStatus, move
from app.kit.backoff import backoff
from app.kit.loops import Loop
from app.ops.metrics import RECONCILER_POLLS
from app.seedance.client import SeedanceClient, SeedanceError

logger = logging.getLogger(__name__)
# a job claimed and never confirmed sent (its worker died, or the answer was lost) whose
# grace passed with no callback: Seedance never reported having it
UNKNOWN_OUTCOME = "the submission's outcome is unknown and no callback came"
EXPIRY_BATCH = 100


class Reconciler(Loop):
    name = "reconciler"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        client: SeedanceClient,
        settings: Settings,
        on_applied: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(settings.reconciler_poll_seconds)
        self._sessionmaker = sessionmaker
        self._client = client
        self._settings = settings
        self._on_applied = on_applied  # wakes the media worker: a success may need a copy
        self._limiter = AsyncLimiter(settings.reconciler_status_rate_per_second, 1)
        # never lease more jobs than the rate cap lets us poll before the next round
        self._batch = max(
            1, int(settings.reconciler_status_rate_per_second * settings.reconciler_poll_seconds)
        )
        self._down_since: datetime | None = None  # the database, as this loop found it
        self._last_outage: tuple[datetime, datetime] | None = None

    async def run_once(self) -> int:
        try:
            expired = await self._expire_overdue()
            due = await self._claim_due()
        except Exception as exc:
            if is_database_unavailable(exc) and self._down_since is None:
                self._down_since = datetime.now(UTC)
            raise
        if self._down_since is not None:
            self._last_outage, self._down_since = (self._down_since, datetime.now(UTC)), None
        await asyncio.gather(*(self._poll(job_id, task_id) for job_id, task_id in due))
        return expired + len(due)

    def _time_lost(self, now: datetime) -> timedelta:
        """How long the database was away (still away: so far), plus one round (the outage
        may have begun that long before this loop saw it); nothing once every deadline the
        outage touched has passed again."""
        if self._down_since is not None:
            began, ended = self._down_since, now
        elif self._last_outage is not None:
            began, ended = self._last_outage
        else:
            return timedelta(0)
        lost = ended - began + timedelta(seconds=self._settings.reconciler_poll_seconds)
        longest = max(
            self._settings.job_hard_deadline_seconds, self._settings.submit_unknown_grace_seconds
        )
        if now - ended > timedelta(seconds=longest) + lost:
            self._last_outage = None
            return timedelta(0)
        return lost

    def _backoff(self, polls: int) -> timedelta:
        settings = self._settings
        return backoff(
            polls,
            settings.reconciler_backoff_initial_seconds,
            settings.reconciler_backoff_max_seconds,
        )

    async def _claim_due(self) -> list[tuple[uuid.UUID, str]]:
        now = datetime.now(UTC)
        async with self._sessionmaker() as session, session.begin():
            jobs = await session.scalars(
                select(Job)
                .where(Job.status == JobStatus.RUNNING, Job.next_poll_at <= now)
                .order_by(Job.next_poll_at)
                .limit(self._batch)
                .with_for_update(skip_locked=True)
            )
            claimed = []
            for job in jobs:
                job.status_polls += 1
                job.next_poll_at = now + self._backoff(job.status_polls)  # the lease
                assert job.upstream_task_id is not None  # running implies a task id
                claimed.append((job.id, job.upstream_task_id))
        return claimed

    async def _poll(self, job_id: uuid.UUID, task_id: str) -> ApplyResult | None:
        """Ask Seedance about the job's task and apply the answer; None when it could not
        be asked."""
        async with self._limiter:
            try:
                report = await self._client.status(task_id)
            except SeedanceError as exc:
                RECONCILER_POLLS.labels("error").inc()
                logger.warning("job %s: status of task %s failed: %s", job_id, task_id, exc.code)
                return None
        async with self._sessionmaker() as session:
            result = await apply_report(
                session, self._settings, job_id, report, EventSource.RECONCILER
            )
        RECONCILER_POLLS.labels(result).inc()
        if result is ApplyResult.APPLIED:
            self._on_applied()
        return result

    async def _expire_overdue(self) -> int:
        now = datetime.now(UTC)
        lost = self._time_lost(now)
        hard = now - timedelta(seconds=self._settings.job_hard_deadline_seconds) - lost
        grace = now - timedelta(seconds=self._settings.submit_unknown_grace_seconds) - lost
        # a job whose video Seedance delivered is the media worker's now
        overdue = and_(
            Job.status == JobStatus.RUNNING, Job.submitted_at < hard, Job.media_status.is_(None)
        )
        late = await self._overdue(overdue)
        looked = await asyncio.gather(*(self._poll(job_id, task_id) for job_id, task_id in late))
        still_unknown = [
            job_id
            for (job_id, _), result in zip(late, looked, strict=True)
            if result is not ApplyResult.APPLIED  # else its outcome came with the last look
        ]
        expired = 0
        if still_unknown:
            expired = await self._fail_where(
                and_(overdue, Job.id.in_(still_unknown)),
                "Seedance did not report an outcome before the deadline",
            )
        expired += await self._fail_where(
            and_(
                Job.status == JobStatus.QUEUED,
                Job.upstream_task_id.is_(None),
                Job.submit_started_at < grace,
            ),
            UNKNOWN_OUTCOME,
        )
        return expired

    async def _overdue(self, condition: ColumnElement[bool]) -> list[tuple[uuid.UUID, str]]:
        """Running jobs past their deadline, with their task ids, for a last look."""
        async with self._sessionmaker() as session:
            rows = await session.execute(
                select(Job.id, Job.upstream_task_id).where(condition).limit(EXPIRY_BATCH)
            )
            return [(job_id, task_id) for job_id, task_id in rows if task_id is not None]

    async def _fail_where(self, condition: ColumnElement[bool], detail: str) -> int:
        async with self._sessionmaker() as session, session.begin():
            jobs = list(
                await session.scalars(
                    select(Job)
                    .where(condition)
                    .limit(EXPIRY_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in jobs:
                job.error_code = "upstream_timeout"
                job.error_detail = detail
                job.resolved_by = EventSource.RECONCILER
                move(session, job, JobStatus.FAILED, EventSource.RECONCILER, detail=detail)
        if jobs:
            logger.warning("failed %d jobs with upstream_timeout: %s", len(jobs), detail)
        return len(jobs)
