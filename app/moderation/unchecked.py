"""Jobs accepted `unchecked` (MODERATION_FAIL_MODE=open while the provider was down) are
judged once it answers again, before the dispatcher may send them (it skips them until
then): allowed, they take their place in the queue; refused, they fail `content_policy`
as a create would have been refused, never sent, never charged."""

import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db.models import Job
from app.jobs.inputs import references
from app.jobs.refusals import fail_for_content
from app.jobs.screening import job_pieces
from app.jobs.states import EventSource, JobStatus, ModerationState
from app.kit.loops import Loop
from app.moderation import standing
from app.moderation.decisions import Decision, Stage, Verdict, categories_of, not_allowed, worst
from app.moderation.input_stage import not_allowed_detail, record_decision
from app.moderation.moderator import ModerationUnavailable, Moderator
from app.moderation.providers import Context

BATCH = 50
UploadUrls = Callable[[AsyncSession, set[uuid.UUID]], Awaitable[dict[uuid.UUID, str]]]


class UncheckedJobs(Loop):
    name = "moderation-recheck"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        moderator: Moderator,
        settings: Settings,
        upload_urls: UploadUrls,
    ) -> None:
        super().__init__(settings.moderation_recheck_seconds)
        self._sessionmaker = sessionmaker
        self._moderator = moderator
        self._settings = settings
        self._upload_urls = upload_urls

    async def run_once(self) -> int:
        async with self._sessionmaker() as session:
            jobs = list(
                await session.scalars(
                    select(Job)
                    .where(
                        Job.moderation_state == ModerationState.UNCHECKED,
                        Job.status == JobStatus.QUEUED,
                    )
                    .order_by(Job.created_at)
                    .limit(BATCH)
                )
            )
            named = {upload_id for job in jobs for upload_id in references(job)}
            urls = await self._upload_urls(session, named) if named else {}
        judged = 0
        for job in jobs:
            pieces = job_pieces(job.prompt, job.images, str, urls)
            try:
                decisions = await self._moderator.judge(
                    Context(Stage.INPUT, job.owner, str(job.id)), pieces
                )
            except ModerationUnavailable:
                break  # still down: the next round tries again
            await self._settle(job.id, decisions)
            judged += 1
        return judged

    async def _settle(self, job_id: uuid.UUID, decisions: list[Decision]) -> None:
        async with self._sessionmaker() as session, session.begin():
            job = await session.get(Job, job_id, with_for_update=True, populate_existing=True)
            if job is None or job.moderation_state != ModerationState.UNCHECKED:
                return
            refused = not_allowed(decisions)
            enforce = bool(refused) and self._moderator.enforcing
            for decision in refused:
                record_decision(
                    session, job.owner, Stage.INPUT, decision, job_id=job.id, observed=not enforce
                )
            if not enforce or job.status != JobStatus.QUEUED:
                job.moderation_state = None
                return
            fail_for_content(
                session,
                job,
                stage=Stage.INPUT,
                decided_by=refused[0].provider,
                categories=categories_of(refused),
                detail=not_allowed_detail(refused, "nothing was sent or charged"),
                source=EventSource.MODERATION,
            )
            if worst(refused) is Verdict.BLOCK:
                await standing.enforce_strikes(session, self._settings, job.owner)
