"""The simulator's reports: a task's final callback is final by construction."""

import time

from simulator.app import SimTask


def task(**fields: object) -> SimTask:
    values: dict = {
        "task_id": "sim-1",
        "request": {},
        "created": time.monotonic(),
        "will_fail": False,
        "never_finish": False,
        "video_url": "http://127.0.0.1/files/sim-1.mp4",
        **fields,
    }
    return SimTask(**values)


def test_a_task_is_final_once_its_run_marked_it_done_whatever_the_clock_says() -> None:
    """The final callback used to read the clock right after `sleep(task_seconds)`; with
    the timer's granularity it could still say IN_PROGRESS, and the job waited for the
    reconciler (issue 27, item 7)."""
    running = task()
    assert running.status(task_seconds=3600) == "PENDING"  # by the clock: a third not passed
    assert task(done=True).status(task_seconds=3600) == "SUCCESS"
    assert task(done=True, will_fail=True).status(task_seconds=3600) == "FAILED"
    ages_ago = time.monotonic() - 7200
    assert task(done=True, never_finish=True, created=ages_ago).status(3600) == "IN_PROGRESS"
