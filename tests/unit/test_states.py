"""The state machine allows exactly the documented moves and records each one."""

import itertools
import uuid
from datetime import UTC, datetime

import pytest

from app.db.models import Job, JobEvent
from app.jobs.states import ALLOWED_MOVES, TERMINAL, EventSource, IllegalMove, JobStatus, move

EXPECTED = {
    (JobStatus.QUEUED, JobStatus.RUNNING),
    (JobStatus.QUEUED, JobStatus.FAILED),
    (JobStatus.QUEUED, JobStatus.CANCELED),
    (JobStatus.RUNNING, JobStatus.SUCCEEDED),
    (JobStatus.RUNNING, JobStatus.FAILED),
    (JobStatus.RUNNING, JobStatus.CANCELED),  # deleted before it finished
}


class FakeSession:
    """Collects what `move` adds; the state machine itself does no I/O."""

    def __init__(self) -> None:
        self.added: list[object] = []

    def add(self, obj: object) -> None:
        self.added.append(obj)


def job_in(status: JobStatus) -> Job:
    now = datetime.now(UTC)
    return Job(id=uuid.uuid4(), status=status, created_at=now, updated_at=now)


@pytest.mark.parametrize(("current", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_only_documented_moves_are_allowed(current: JobStatus, target: JobStatus) -> None:
    session = FakeSession()
    job = job_in(current)
    if (current, target) in EXPECTED:
        event = move(session, job, target, EventSource.DISPATCHER, detail="why")  # type: ignore[arg-type]
        assert job.status == target
        assert session.added == [event]
        assert isinstance(event, JobEvent)
        assert (event.from_status, event.to_status, event.source) == (current, target, "dispatcher")
        assert (job.finished_at is not None) == (target in TERMINAL)
    else:
        with pytest.raises(IllegalMove):
            move(session, job, target, EventSource.CALLBACK)  # type: ignore[arg-type]
        assert job.status == current
        assert session.added == []


def test_terminal_states_are_the_ones_without_moves() -> None:
    assert {s for s, moves in ALLOWED_MOVES.items() if not moves} == TERMINAL
    assert TERMINAL == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED}
