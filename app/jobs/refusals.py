"""Seedance refusing a job's content (a sensitive-content family, at input or output):
the job fails `content_policy`, never retried and never charged, blocked by upstream at
that stage, and the refusal is a strike against its owner (MODERATION_UPSTREAM_STRIKES),
all in the transaction of the failed move.

The user reads a plain sentence; upstream's own words go to the moderation history,
which only admins read (they may quote the prompt, and erasure clears them).
"""

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db.models import Job, ModerationEvent
from app.jobs.states import CONTENT_POLICY, EventSource, JobStatus, ModerationState, move
from app.ops.metrics import UPSTREAM_REFUSALS
from app.seedance.client import RefusalStage

UPSTREAM = "upstream"  # the decision's source, as the moderation history names it
_DETAIL = {
    RefusalStage.INPUT: "Seedance refused the prompt or an input under its content policy; "
    "nothing was charged.",
    RefusalStage.OUTPUT: "Seedance refused to deliver the video under its content policy; "
    "nothing was charged.",
}


def fail_for_content(
    session: AsyncSession,
    job: Job,
    *,
    stage: str,
    decided_by: str,
    categories: list[str],
    detail: str,
    source: EventSource,
) -> None:
    """The job fails `content_policy`, blocked at `stage` by `decided_by` (a provider, or
    upstream): by Seedance here, by a judgment made after the create in the moderation
    domain."""
    job.error_code = CONTENT_POLICY
    job.error_detail = detail
    job.moderation_state = ModerationState.BLOCKED
    job.moderation_stage = stage
    job.moderation_source = decided_by
    job.moderation_categories = categories
    move(session, job, JobStatus.FAILED, source, detail=CONTENT_POLICY)


def fail_refused(
    session: AsyncSession,
    settings: Settings,
    job: Job,
    stage: RefusalStage,
    upstream_text: str | None,
    source: EventSource,
) -> None:
    # app/moderation/history.py writes the same rows for its own decisions
    session.add(
        ModerationEvent(
            job_id=job.id,
            subject=job.owner,
            kind="decided",
            stage=stage.value,
            source=UPSTREAM,
            verdict="block",
            categories={},
            reason="upstream_refused",
            note=upstream_text,
            strike=settings.moderation_upstream_strikes,
        )
    )
    UPSTREAM_REFUSALS.labels(stage.value).inc()
    fail_for_content(
        session,
        job,
        stage=stage.value,
        decided_by=UPSTREAM,
        categories=[],
        detail=_DETAIL[stage],
        source=source,
    )
