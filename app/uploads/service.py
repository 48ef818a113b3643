"""Upload use cases: create (receive, sanitize, store), read, list and delete.

An upload is streamed to a staged file, read and re-encoded in a bounded child process
(`app/uploads/sanitize.py`), and only the clean copy is stored. Its row is written before
its object with `remove_at` a little ahead, and cleared once the object is stored: a crash
in between leaves a row the sweep removes with whatever was stored, never an object no row
knows of.
"""

import asyncio
import contextlib
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings, UploadKind
from app.db.models import Job, JobUpload, Upload
from app.identity.plans import PlanLimits
from app.jobs.budget import lock_owner
from app.jobs.erasure_marks import check_not_erased
from app.jobs.states import JobStatus
from app.kit.bounded_child import BoundedChildren, Bounds, ChildRefused
from app.kit.cursor import newest_first_page
from app.kit.deadlines import within_deadlines
from app.kit.errors import FieldError, ProblemError
from app.kit.fair_slots import FairSlots, SlotsBusy
from app.moderation import standing
from app.moderation.review import refuse_taken_down
from app.ops.metrics import UPLOADS
from app.storage.objects import ObjectStore
from app.uploads.in_progress import UploadsInProgress
from app.uploads.keys import upload_key
from app.uploads.receive import FILE_FIELD, receive_file
from app.uploads.removal import UploadRemover
from app.uploads.sanitize import Facts, Rules
from app.uploads.staging_quota import StagingQuota

logger = logging.getLogger(__name__)
STORING_GRACE = timedelta(minutes=15)  # longer than storing one upload can take


ClientGone = Callable[[], Awaitable[None]]


async def _unless_gone(work: Coroutine[Any, Any, Facts], client_gone: ClientGone) -> Facts:
    """`work`, stopped the moment the client goes (its child killed, its place in line
    given up): no one would read the answer."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(client_gone())
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if task.cancelled():
        raise ProblemError(400, "client_closed", "The client closed the connection.")
    return task.result()


def _rules(settings: Settings, plan: PlanLimits) -> Rules:
    return Rules(
        image_min_side=settings.upload_image_min_side,
        image_max_side=settings.upload_image_max_side,
        image_min_aspect=settings.upload_image_min_aspect,
        image_max_aspect=settings.upload_image_max_aspect,
        image_max_bytes=plan.upload_cap(UploadKind.IMAGE),
        decode_memory_bytes=settings.upload_sanitize_memory_bytes,
        media_min_seconds=settings.upload_media_min_seconds,
        media_max_seconds=settings.upload_media_max_seconds,
        video_max_side=settings.upload_video_max_side,
    )


class Uploads:
    """One per process: the storage, and the cap on sanitizing children at once."""

    def __init__(
        self,
        storage: ObjectStore,
        remover: UploadRemover,
        settings: Settings,
        children: BoundedChildren,
    ) -> None:
        self._storage = storage
        self._children = children
        self._remover = remover
        self._settings = settings
        slots = settings.upload_sanitize_slots
        self.sanitizing = FairSlots(slots, per_key=max(1, slots // 2))
        self._bounds = Bounds(
            settings.upload_sanitize_memory_bytes, settings.upload_sanitize_seconds
        )
        self.in_progress = UploadsInProgress(
            settings.uploads_in_progress_per_user, settings.uploads_in_progress_per_address
        )
        self.staging = StagingQuota(settings.upload_staging_quota_bytes)

    async def create(
        self,
        session: AsyncSession,
        owner: str,
        address: str,
        plan: PlanLimits,
        chunks: AsyncIterator[bytes],
        content_type: str,
        client_gone: ClientGone,
    ) -> Upload:
        """`address`: the client's, for the cap on uploads in progress from one address;
        `client_gone` returns when the client has closed its connection (its file is then
        not read any further). A suspended user is refused (403) before a byte is read."""
        started_at = datetime.now(UTC)
        await standing.check_not_suspended(session, self._settings, owner)
        with self.in_progress.hold(owner, address), self.staging.upload() as take:
            upload = await self._create(
                session, owner, plan, chunks, content_type, take, client_gone
            )
        return await self._kept_unless_erased(session, upload, started_at)

    async def _create(
        self,
        session: AsyncSession,
        owner: str,
        plan: PlanLimits,
        chunks: AsyncIterator[bytes],
        content_type: str,
        take: Callable[[int], None],
        client_gone: ClientGone,
    ) -> Upload:
        upload_id = uuid.uuid4()
        original = self._storage.staging_root / f"upload-{upload_id}.original"
        clean = self._storage.staging_root / f"upload-{upload_id}.clean"
        kind: UploadKind | None = None
        try:
            body = within_deadlines(
                chunks, self._settings.upload_idle_seconds, self._settings.upload_max_seconds
            )
            received = await receive_file(body, content_type, original, plan.upload_cap, take)
            await refuse_taken_down(session, received.digest.hexdigest())
            facts = await _unless_gone(self._sanitize(owner, original, clean, plan), client_gone)
            take(facts.size_bytes)  # the clean copy, staged beside the original
            kind = UploadKind(facts.kind)
            if received.claimed is not None and kind is not received.claimed:
                raise _invalid(f"the file is {_described(facts)}, not {received.claimed.value}")
            if received.size > plan.upload_cap(kind):
                raise ProblemError(
                    413,
                    "upload_too_large",
                    f"The {kind.value} is larger than {plan.upload_cap(kind)} bytes.",
                )
            upload = await self._store(session, upload_id, owner, facts, clean.name)
        except ProblemError as exc:
            outcome = {413: "too_large", 422: "refused"}.get(exc.status)
            if outcome is not None:
                UPLOADS.labels(kind.value if kind else "unknown", outcome).inc()
            raise
        finally:
            original.unlink(missing_ok=True)
            clean.unlink(missing_ok=True)
        UPLOADS.labels(kind.value, "stored").inc()
        return upload

    async def _sanitize(self, owner: str, original: Path, clean: Path, plan: PlanLimits) -> Facts:
        """In a child, once a slot is free (a fair share of them: `FairSlots`); 503 `busy`
        past UPLOAD_SANITIZE_WAIT_SECONDS."""
        rules = json.dumps(asdict(_rules(self._settings, plan)))
        wait = self._settings.upload_sanitize_wait_seconds
        try:
            async with self.sanitizing.hold(owner, wait):
                fields = await self._children.run(
                    "app.uploads.sanitize",
                    [str(original), str(clean), rules],
                    self._bounds,
                    "reading the file",
                )
        except SlotsBusy:
            raise ProblemError(
                503,
                "busy",
                f"Every slot for reading uploads was taken for {wait:g} s; send the file again.",
                headers={"Retry-After": str(math.ceil(wait))},
            ) from None
        except ChildRefused as exc:
            raise _invalid(str(exc)) from None
        return Facts(**fields)

    async def _kept_unless_erased(
        self, session: AsyncSession, upload: Upload, started_at: datetime
    ) -> Upload:
        """An upload is kept, under its owner's lock, unless the owner was erased while it
        was on its way: then its row and object go now and the answer is a 410."""
        owner, upload_id = upload.owner, upload.id  # (a rollback expires the object)
        await lock_owner(session, owner)
        try:
            await check_not_erased(session, owner, started_at)
        except ProblemError:
            await self._drop(session, upload_id)
            raise
        kept = await session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.owner == owner)
            .values(remove_at=None)
            .returning(Upload.id)
        )
        if kept.first() is None:  # its storing grace ran out and the sweep took it
            await session.rollback()
            await self._drop(session, upload_id)
            raise _storage_unavailable()
        await session.commit()
        return upload

    async def _drop(self, session: AsyncSession, upload_id: uuid.UUID) -> None:
        await session.execute(
            update(Upload).where(Upload.id == upload_id).values(remove_at=datetime.now(UTC))
        )
        await session.commit()
        await self._remover.remove(ids=[upload_id])

    async def _store(
        self, session: AsyncSession, upload_id: uuid.UUID, owner: str, facts: Facts, staged: str
    ) -> Upload:
        now = datetime.now(UTC)
        retention = timedelta(hours=self._settings.upload_retention_hours)
        upload = Upload(
            id=upload_id,
            owner=owner,
            **asdict(facts),
            created_at=now,
            expires_at=now + retention,
            remove_at=now + STORING_GRACE,
        )
        session.add(upload)
        await session.commit()
        key = upload_key(upload_id, facts.content_type)
        try:
            await self._storage.store_staged(staged, key, facts.content_type)
        except Exception as exc:  # the row, still marked, is the sweep's to remove
            logger.warning("upload %s: storing failed (%r)", upload_id, exc)
            raise _storage_unavailable() from None
        return upload  # still marked for removal: `_kept_unless_erased` decides

    async def delete(self, session: AsyncSession, owner: str, upload_id: uuid.UUID) -> None:
        """The owner deletes an upload no unfinished job uses (409 otherwise: Seedance may
        still fetch it); its object and row go now (or, after a storage failure, with the
        sweep). Deleting it again is a 404, as for any upload that is not there."""
        upload = await session.scalar(
            select(Upload).where(*_owned(owner, upload_id)).with_for_update()
        )
        if upload is None:
            raise upload_not_found()
        in_use = await session.scalar(
            select(Job.id)
            .join(JobUpload, JobUpload.job_id == Job.id)
            .where(
                JobUpload.upload_id == upload_id,
                Job.deleted_at.is_(None),
                Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
            )
            .limit(1)
        )
        if in_use is not None:
            await session.commit()
            raise ProblemError(
                409,
                "upload_in_use",
                f"Job {in_use} uses this upload and has not finished; cancel or delete it first.",
            )
        upload.remove_at = datetime.now(UTC)
        await session.commit()
        await self._remover.remove([upload_id])


def _owned(owner: str, upload_id: uuid.UUID) -> tuple[ColumnElement[bool], ...]:
    return (Upload.id == upload_id, Upload.owner == owner, Upload.remove_at.is_(None))


def upload_not_found() -> ProblemError:
    return ProblemError(404, "upload_not_found", "No such upload.")


def _invalid(reason: str) -> ProblemError:
    return ProblemError(
        422,
        "upload_invalid",
        f"The file was refused: {reason}.",
        errors=[FieldError(field=FILE_FIELD, code="upload_invalid", message=reason)],
    )


def _described(facts: Facts) -> str:
    return f"{'an' if facts.kind == 'image' else 'a'} {facts.kind} ({facts.content_type})"


async def get_upload(session: AsyncSession, owner: str, upload_id: uuid.UUID) -> Upload:
    """The owner's upload; someone else's is reported exactly like a missing one."""
    upload = await session.scalar(select(Upload).where(*_owned(owner, upload_id)))
    if upload is None:
        raise upload_not_found()
    return upload


async def list_uploads(
    session: AsyncSession, owner: str, *, limit: int, cursor: str | None
) -> tuple[list[Upload], str | None]:
    query = select(Upload).where(Upload.owner == owner, Upload.remove_at.is_(None))
    keys = (Upload.created_at, Upload.id)
    return await newest_first_page(session, query, keys, limit=limit, cursor=cursor)


def _storage_unavailable() -> ProblemError:
    return ProblemError(
        503,
        "storage_unavailable",
        "The file could not be stored now; send it again in a moment.",
        headers={"Retry-After": "5"},
    )
