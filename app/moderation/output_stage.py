"""The output stage (MODERATION_OUTPUT): a stored result judged before its owner can see
it, from frames sampled evenly through it (first and last included,
MODERATION_OUTPUT_FRAMES; decoded in the bounded child with the probe, downscaled) and the
prompt.

A machine never takes a video down alone: what the provider flags is held for a human
(`held`: no URL, 403 `in_review` on every one); thresholds may make the highest scores
`blocked` (kept, for admins only, until a takedown or retention). With the provider
unavailable the video is held (fail closed) or shown as `unchecked` (fail open).
"""

import base64
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import ModerationFailMode, Settings
from app.db.models import Job, ModerationCase
from app.jobs.screening import Piece
from app.jobs.states import ModerationState
from app.moderation import review, standing
from app.moderation.decisions import Decision, Stage, Verdict, categories_of, not_allowed, worst
from app.moderation.input_stage import mark_unchecked, record_decision
from app.moderation.moderator import ModerationUnavailable, Moderator
from app.moderation.providers import Context


@dataclass(frozen=True, slots=True)
class OutputJudgment:
    decisions: list[Decision] = field(default_factory=list)
    unavailable: bool = False


class OutputModeration:
    def __init__(self, moderator: Moderator, settings: Settings) -> None:
        self._moderator = moderator
        self._settings = settings

    @property
    def frames(self) -> int:
        """How many frames the copy should sample (0: the stage is off)."""
        return self._settings.moderation_output_frames if self._settings.moderation_output else 0

    async def judge(
        self, owner: str, job_id: uuid.UUID, prompt: str | None, frames: list[bytes]
    ) -> OutputJudgment:
        """Ask the provider (no transaction open)."""
        pieces = [Piece("prompt", text=prompt)] if prompt else []
        pieces += [
            Piece(
                f"frames[{i}]", image_url="data:image/jpeg;base64," + base64.b64encode(f).decode()
            )
            for i, f in enumerate(frames)
        ]
        try:
            return OutputJudgment(
                await self._moderator.judge(Context(Stage.OUTPUT, owner, str(job_id)), pieces)
            )
        except ModerationUnavailable:
            return OutputJudgment(unavailable=True)

    async def apply(self, session: AsyncSession, job: Job, judgment: OutputJudgment) -> None:
        """In the transaction that stores the copy, before the job is `succeeded`."""
        if judgment.unavailable:
            if self._settings.moderation_fail_mode is ModerationFailMode.OPEN:
                mark_unchecked(session, job, Stage.OUTPUT, self._moderator.provider.name)
                return
            await self._hold(session, job)
            return
        refused = not_allowed(judgment.decisions)
        enforce = self._moderator.enforcing
        for decision in refused:
            record_decision(
                session, job.owner, Stage.OUTPUT, decision, job_id=job.id, observed=not enforce
            )
        if not refused or not enforce:
            return
        job.moderation_stage = Stage.OUTPUT
        job.moderation_source = refused[0].provider
        job.moderation_categories = categories_of(refused)
        await self._hold(session, job)
        if worst(refused) is Verdict.BLOCK:
            job.moderation_state = ModerationState.BLOCKED  # in the queue still, for a takedown
            await standing.enforce_strikes(session, self._settings, job.owner)

    @staticmethod
    async def _hold(session: AsyncSession, job: Job) -> None:
        review.hold(session, job, await session.get(ModerationCase, job.id))
