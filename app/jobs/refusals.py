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


def fail_refused(
    session: AsyncSession,
    settings: Settings,
    job: Job,
    stage: RefusalStage,
    upstream_text: str | None,
    source: EventSource,
) -> None:
    job.error_code = CONTENT_POLICY
    job.error_detail = _DETAIL[stage]
    job.moderation_state = ModerationState.BLOCKED
    job.moderation_stage = stage.value
    job.moderation_source = UPSTREAM
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
    move(session, job, JobStatus.FAILED, source, detail=CONTENT_POLICY)
