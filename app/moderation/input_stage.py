"""The input stage: a create's prompts and images judged before anything is queued
(the jobs domain's `InputScreen` port).

Refused (enforce mode): 422 `content_policy` naming each field at fault with its
categories, the whole create refused, nothing recorded but the decision (a block is a
strike). A `review` verdict at input is a refusal too (there is nothing to hold yet), but
not a strike. Observe mode refuses nothing and records what it would have refused with
the jobs. With the provider unavailable: 503 `moderation_unavailable` (fail closed), or
the jobs are accepted `unchecked` and judged before they are sent (fail open,
`UncheckedJobs`).
"""

import asyncio
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import ModerationFailMode, Settings
from app.db.models import Job
from app.jobs.screening import Piece, Screening
from app.jobs.states import CONTENT_POLICY, ModerationState
from app.kit.errors import FieldError, ProblemError
from app.moderation import standing
from app.moderation.decisions import Decision, Stage, Verdict, not_allowed, worst
from app.moderation.history import EventKind, record
from app.moderation.moderator import ModerationUnavailable, Moderator
from app.moderation.providers import Context


@dataclass(slots=True)
class InputJudgment(Screening):
    # per job of the create: the decisions that were not `allow` (observe mode keeps them)
    flagged: list[list[Decision]] = field(default_factory=list)


def not_allowed_detail(decisions: Sequence[Decision], outcome: str) -> str:
    fields = ", ".join(d.field for d in decisions)
    return f"The content policy does not allow {fields}; {outcome}."


def content_policy_error(decisions: Sequence[Decision]) -> ProblemError:
    return ProblemError(
        422,
        CONTENT_POLICY,
        not_allowed_detail(decisions, "nothing was created or charged"),
        errors=[
            FieldError(
                field=d.field,
                code=CONTENT_POLICY,
                message="not allowed by the content policy"
                + (f" ({', '.join(sorted(d.categories))})" if d.categories else ""),
                categories=sorted(d.categories),
            )
            for d in decisions
        ],
    )


def unavailable_error(exc: ModerationUnavailable) -> ProblemError:
    return ProblemError(
        503,
        "moderation_unavailable",
        "Content moderation is unavailable, so nothing can be created now; try again shortly.",
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )


class InputModeration:
    def __init__(
        self,
        moderator: Moderator,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
    ) -> None:
        self._moderator = moderator
        self._sessionmaker = sessionmaker
        self._settings = settings

    async def screen(self, owner: str, jobs: Sequence[Sequence[Piece]]) -> Screening:
        async with self._sessionmaker() as session:
            await standing.check_not_suspended(session, self._settings, owner)
        try:
            judged = await asyncio.gather(
                *(self._moderator.judge(Context(Stage.INPUT, owner), pieces) for pieces in jobs)
            )
        except ModerationUnavailable as exc:
            if self._settings.moderation_fail_mode is ModerationFailMode.CLOSED:
                raise unavailable_error(exc) from exc
            return InputJudgment(unchecked=True)
        flagged = [not_allowed(decisions) for decisions in judged]
        refused = [d for decisions in flagged for d in decisions]
        if refused and self._moderator.enforcing:
            await self._record_refusal(owner, refused)
            raise content_policy_error(refused)
        return InputJudgment(flagged=flagged if refused else [])

    async def _record_refusal(self, owner: str, refused: Sequence[Decision]) -> None:
        """The refused create has no job: its decision is kept under the user, a strike
        when it was a block (which may suspend them)."""
        async with self._sessionmaker() as session, session.begin():
            for decision in refused:
                record_decision(session, owner, Stage.INPUT, decision, job_id=None)
            if worst(refused) is Verdict.BLOCK:
                await standing.enforce_strikes(session, self._settings, owner)

    async def record(
        self, session: AsyncSession, screening: Screening, jobs: Sequence[tuple[Job, str]]
    ) -> None:
        assert isinstance(screening, InputJudgment)  # made by `screen` above
        for index, (job, _) in enumerate(jobs):
            if screening.unchecked:
                mark_unchecked(session, job, Stage.INPUT, self._moderator.provider.name)
            for decision in screening.flagged[index] if screening.flagged else ():
                record_decision(
                    session, job.owner, Stage.INPUT, decision, job_id=job.id, observed=True
                )


def mark_unchecked(session: AsyncSession, job: Job, stage: Stage, provider: str) -> None:
    """Accepted while the provider could not answer (MODERATION_FAIL_MODE=open)."""
    job.moderation_state = ModerationState.UNCHECKED
    record(
        session,
        job.owner,
        EventKind.UNCHECKED,
        provider,
        job_id=job.id,
        stage=stage,
        reason="provider_unavailable",
    )


def record_decision(
    session: AsyncSession,
    subject: str,
    stage: Stage,
    decision: Decision,
    *,
    job_id: uuid.UUID | None,
    observed: bool = False,
) -> None:
    """A provider's decision that was not `allow` (the field it was about in the note);
    an enforced block is a strike."""
    record(
        session,
        subject,
        EventKind.DECIDED,
        decision.provider,
        job_id=job_id,
        stage=stage,
        verdict=decision.verdict.label,
        categories=decision.categories,
        reason=decision.reason,
        note=decision.field + (" (observe mode: not enforced)" if observed else ""),
        strike=not observed and decision.verdict is Verdict.BLOCK,
    )
