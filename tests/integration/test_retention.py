"""EVENTS_RETENTION_DAYS: old job moves and finished webhook messages are pruned in small
batches; each job's latest move, young rows and pending messages stay."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from app.db.models import JobEvent, OutboundAttempt, OutboundEndpoint, OutboundMessage
from app.jobs import retention
from app.jobs.retention import RetentionSweeper
from app.outbound.retention import prune_finished_messages
from testkit.harness import Stack

OLD = datetime.now(UTC) - timedelta(days=40)


async def test_old_moves_and_finished_messages_are_pruned_in_batches(
    api: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "RETENTION_BATCH", 3)  # several batches, and windows
    old_jobs = [await api.create_job() for _ in range(4)]
    for job in old_jobs[:2]:  # two moves each: queued, then canceled (the latest)
        assert (await api.http.post(f"/jobs/{job['id']}/cancel", headers=api.headers())).is_success
    young = await api.create_job()
    assert (await api.http.post(f"/jobs/{young['id']}/cancel", headers=api.headers())).is_success
    sessionmaker = api.app.state.services.sessionmaker
    async with sessionmaker() as session, session.begin():
        old_ids = [uuid.UUID(job["id"]) for job in old_jobs]
        await session.execute(update(JobEvent).where(JobEvent.job_id.in_(old_ids)).values(at=OLD))
        endpoint = OutboundEndpoint(url="https://hooks.example.com/x", secret="encrypted")
        session.add(endpoint)
        await session.flush()
        messages = {
            (status, age): OutboundMessage(
                endpoint_id=endpoint.id,
                type="job.queued",
                dedupe_key=f"{status}-{age}",
                payload="{}",
                status=status,
                next_attempt_at=datetime.now(UTC),
                created_at=OLD if age == "old" else datetime.now(UTC),
            )
            for status in ("delivered", "failed", "pending")
            for age in ("old", "young")
        }
        session.add_all(messages.values())
        await session.flush()
        session.add_all(
            OutboundAttempt(message_id=m.id, result="delivered", latency_ms=1.0)
            for m in messages.values()
        )

    sweeper = RetentionSweeper(
        sessionmaker,
        api.settings.model_copy(update={"events_retention_days": 30}),
        [prune_finished_messages],
    )
    removed = await sweeper.run_once()

    async with sessionmaker() as session:
        moves = (await session.execute(select(JobEvent.job_id, JobEvent.to_status))).all()
        left = {
            (message.status, "old" if message.created_at < OLD + timedelta(days=1) else "young")
            for message in await session.scalars(select(OutboundMessage))
        }
        attempts = await session.scalar(select(func.count()).select_from(OutboundAttempt))
    by_job: dict[uuid.UUID, list[str]] = {}
    for job_id, to_status in moves:
        by_job.setdefault(job_id, []).append(to_status)
    # the two old canceled jobs keep only their latest move; the old queued ones have one
    assert by_job[old_ids[0]] == by_job[old_ids[1]] == ["canceled"]
    assert by_job[old_ids[2]] == by_job[old_ids[3]] == ["queued"]
    assert sorted(by_job[uuid.UUID(young["id"])]) == ["canceled", "queued"]
    assert left == {
        ("pending", "old"),
        ("delivered", "young"),
        ("failed", "young"),
        ("pending", "young"),
    }
    assert attempts == 4
    assert removed == 2 + 2  # two old moves, two finished old messages
    # an old job still has a live stream: its latest move, then the end
    stream = await api.http.get(f"/jobs/{old_jobs[0]['id']}/events", headers=api.headers())
    assert stream.status_code == 200 and "canceled" in stream.text
    assert await sweeper.run_once() == 0  # nothing more, and the next sweep starts where it stopped
