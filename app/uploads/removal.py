"""Removing uploads: those their owner deletes, those of deleted jobs, those of erased
users, and those past their `expires_at` that no job uses.

The database says first what must go (`remove_at`, in the transaction that decides it);
the object, then the row, are removed here. A removal cut by a storage outage or a crash is
done again by the sweep: deleting an object that is already gone is fine.
"""

import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.expression import Exists

from app.config import Settings
from app.db.models import Job, JobUpload, Upload
from app.jobs.service import Erasure
from app.kit.loops import Loop
from app.ops.metrics import UPLOAD_OBJECTS_REMOVED
from app.storage.objects import ObjectStore
from app.uploads.keys import upload_key

logger = logging.getLogger(__name__)
REMOVE_BATCH = 100


def used_by_a_job() -> Exists:
    """The upload is used by a job that is not deleted (which keeps it)."""
    return exists().where(
        JobUpload.upload_id == Upload.id, JobUpload.job_id == Job.id, Job.deleted_at.is_(None)
    )


async def release_unused(session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """Mark for removal the uploads of these (just deleted) jobs that no other job uses."""
    used = select(JobUpload.upload_id).where(JobUpload.job_id.in_(job_ids))
    marked = await session.scalars(
        update(Upload)
        .where(Upload.id.in_(used), Upload.remove_at.is_(None), ~used_by_a_job())
        .values(remove_at=datetime.now(UTC))
        .returning(Upload.id)
    )
    return list(marked)


async def forget_uploads(session: AsyncSession, owner: str, pseudonym: str) -> None:
    """Erasure's part (a `Forgetter`): every upload of the user is marked for removal,
    under the pseudonym until its object and row are gone."""
    await session.execute(
        update(Upload)
        .where(Upload.owner == owner)
        .values(owner=pseudonym, remove_at=datetime.now(UTC))
    )


async def uploads_left(session: AsyncSession, owner: str) -> int:
    """Uploads of `owner` still there (after an erasure: those whose removal failed)."""
    count = select(func.count()).select_from(Upload).where(Upload.owner == owner)
    return await session.scalar(count) or 0


class UploadRemover:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], storage: ObjectStore
    ) -> None:
        self._sessionmaker = sessionmaker
        self._storage = storage

    async def remove_erased(self, session: AsyncSession, erasure: Erasure) -> tuple[int, int]:
        """An erased user's uploads (marked by `forget_uploads`): removed now, and left to
        the sweep."""
        removed = await self.remove(owner=erasure.pseudonym)
        return removed, await uploads_left(session, erasure.pseudonym)

    async def remove(self, ids: Sequence[uuid.UUID] | None = None, owner: str | None = None) -> int:
        """Remove the objects and rows of uploads marked and due: `ids`, or `owner`'s, or
        all; returns how many objects were removed. A storage failure leaves the rest for
        the sweep."""
        removed = 0
        while True:
            query = select(Upload).where(Upload.remove_at <= datetime.now(UTC))
            if ids is not None:
                query = query.where(Upload.id.in_(ids))
            if owner is not None:
                query = query.where(Upload.owner == owner)
            async with self._sessionmaker() as session:
                due = list(await session.scalars(query.limit(REMOVE_BATCH)))
            gone: list[uuid.UUID] = []
            for upload in due:
                try:
                    gone_now = await self._storage.delete(
                        upload_key(upload.id, upload.content_type)
                    )
                except Exception as exc:  # storage down: the sweep retries
                    logger.warning("upload %s: removal failed (%s); will retry", upload.id, exc)
                    continue
                gone.append(upload.id)
                removed += gone_now
                UPLOAD_OBJECTS_REMOVED.inc(gone_now)
            if gone:
                async with self._sessionmaker() as session, session.begin():
                    await session.execute(delete(Upload).where(Upload.id.in_(gone)))
            if len(due) < REMOVE_BATCH or len(gone) < len(due):
                return removed

    async def expire(self) -> int:
        """Mark uploads past their `expires_at` that no job uses; returns how many."""
        async with self._sessionmaker() as session, session.begin():
            marked = await session.scalars(
                update(Upload)
                .where(
                    Upload.remove_at.is_(None),
                    Upload.expires_at <= datetime.now(UTC),
                    ~used_by_a_job(),
                )
                .values(remove_at=datetime.now(UTC))
                .returning(Upload.id)
            )
            return len(list(marked))


class UploadSweeper(Loop):
    """Every UPLOAD_SWEEP_SECONDS: expire unused uploads, then remove every upload due
    (expired, deleted, erased, or cut short by a crash while it was being stored)."""

    name = "upload-sweeper"

    def __init__(self, remover: UploadRemover, settings: Settings) -> None:
        super().__init__(settings.upload_sweep_seconds)
        self._remover = remover

    async def run_once(self) -> int:
        expired = await self._remover.expire()
        return expired + await self._remover.remove()
