"""Removing stored media: of deleted jobs, of erased users, and past MEDIA_RETENTION_DAYS.

The database says first what must go (`purging`, in the transaction that deletes the job);
the objects are then removed here, under a lease like copies, and the job marked
`purged`. A purge cut by a storage outage or a crash is simply done again later: deleting
an object that is already gone is fine.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.models import Job
from app.jobs.service import Erasure
from app.jobs.states import MediaStatus
from app.jobs.stats import media_pending_purge
from app.media.keys import job_keys
from app.ops.metrics import MEDIA_OBJECTS_PURGED
from app.storage.objects import ObjectStore

logger = logging.getLogger(__name__)
PURGE_BATCH = 100


class Purger:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        storage: ObjectStore,
        settings: Settings,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._storage = storage
        self._settings = settings

    async def remove_erased(self, session: AsyncSession, erasure: Erasure) -> tuple[int, int]:
        """An erased user's videos and posters: removed now, and left to a later round."""
        removed = await self.purge(erasure.job_ids)
        return removed, await media_pending_purge(session, erasure.pseudonym)

    async def purge(self, job_ids: list[uuid.UUID] | None = None) -> int:
        """Remove the objects of jobs marked `purging`: all those due, or `job_ids` (which
        the caller has just marked, so they are its own to purge now); returns how many
        objects were removed. Storage failures leave the rest for a later round."""
        if job_ids is not None:  # one pass over them: a failure is the worker's to retry
            chunks = [job_ids[i : i + PURGE_BATCH] for i in range(0, len(job_ids), PURGE_BATCH)]
            return sum([await self._purge_claimed(await self._claim(chunk)) for chunk in chunks])
        removed = 0
        while claimed := await self._claim(None):
            removed += await self._purge_claimed(claimed)
            if len(claimed) < PURGE_BATCH:
                break
        return removed

    async def _purge_claimed(self, claimed: list[uuid.UUID]) -> int:
        removed = 0
        for job_id in claimed:
            try:
                gone = [await self._storage.delete(key) for key in job_keys(job_id)]
            except Exception as exc:  # storage down: retried when the lease runs out
                logger.warning("job %s: purge failed (%s); will retry", job_id, exc)
                continue
            await self._mark_purged(job_id)
            MEDIA_OBJECTS_PURGED.inc(sum(gone))
            removed += sum(gone)
        return removed

    async def _claim(self, job_ids: list[uuid.UUID] | None) -> list[uuid.UUID]:
        now = datetime.now(UTC)
        query = (
            select(Job)
            .where(Job.media_status == MediaStatus.PURGING)
            .limit(PURGE_BATCH)
            .with_for_update(skip_locked=True)
        )
        if job_ids is None:
            due = or_(Job.media_next_attempt_at.is_(None), Job.media_next_attempt_at <= now)
            query = query.where(due)
        else:
            query = query.where(Job.id.in_(job_ids))
        lease = timedelta(seconds=self._settings.media_copy_lease_seconds)
        async with self._sessionmaker() as session, session.begin():
            jobs = list(await session.scalars(query))
            for job in jobs:
                job.media_next_attempt_at = now + lease
            return [job.id for job in jobs]

    async def _mark_purged(self, job_id: uuid.UUID) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True)
            if job is not None and job.media_status == MediaStatus.PURGING:
                job.media_status = MediaStatus.PURGED
                job.media_next_attempt_at = None

    async def sweep_retention(self) -> int:
        """Mark stored media older than MEDIA_RETENTION_DAYS for purging (in batches)."""
        if self._settings.media_retention_days is None:
            return 0
        cutoff = datetime.now(UTC) - timedelta(days=self._settings.media_retention_days)
        async with self._sessionmaker() as session, session.begin():
            jobs = list(
                await session.scalars(
                    select(Job)
                    .where(Job.media_status == MediaStatus.STORED, Job.media_stored_at < cutoff)
                    .limit(PURGE_BATCH)
                    .with_for_update(skip_locked=True)
                )
            )
            for job in jobs:
                job.media_status = MediaStatus.PURGING
                job.media_next_attempt_at = None
        return len(jobs)
