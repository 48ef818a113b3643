"""The warm zygote's children (`app/kit/bounded_child.py`): one fresh child per file,
bounded, killed on cancel, with nothing of the server's to steal (issues 36 and 37)."""

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.kit.bounded_child import CHILD_ENVIRONMENT, BoundedChildren, Bounds, ChildRefused
from testkit.harness import wait_until
from testkit.processes import alive, children_of

WORK = "tests.bounded_work"
ROOMY = Bounds(memory_bytes=1024**3, seconds=60)


@pytest.fixture
async def children() -> AsyncIterator[BoundedChildren]:
    made = BoundedChildren()
    try:
        yield made
    finally:
        await made.close()


def zygote_children(children: BoundedChildren) -> list[int]:
    assert children.zygote_pid is not None
    return children_of(children.zygote_pid)


async def test_a_child_sees_no_secret_and_no_descriptor_of_the_server(
    children: BoundedChildren, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SEEDANCE_API_KEY", "sk-canary")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:canary@db/app")
    with (tmp_path / "held-open").open("w"):  # a descriptor the server holds right now
        environment = await children.run(WORK, ["environment"], ROOMY, "testing")
        descriptors = await children.run(WORK, ["descriptors"], ROOMY, "testing")
    assert environment == CHILD_ENVIRONMENT
    targets = sorted(t for t in descriptors.values() if t != "gone")
    assert targets[:3] == ["/dev/null"] * 3  # stdin, stdout, stderr
    assert len(targets) == 4 and targets[3].startswith("socket:")  # its answer's connection


async def test_each_file_gets_a_fresh_child(children: BoundedChildren) -> None:
    first = await children.run(WORK, ["remember"], ROOMY, "testing")
    second = await children.run(WORK, ["remember"], ROOMY, "testing")
    assert len(first) == len(second) == 1 and first != second


async def test_a_large_answer_arrives_whole(children: BoundedChildren) -> None:
    """The probe's answer carries a poster JPEG in base64: far more than a stream
    reader's 64 KiB line."""
    answer = await children.run(WORK, ["large", str(3 * 1024 * 1024)], ROOMY, "testing")
    assert len(answer) == 3 * 1024 * 1024


async def test_refusals_limits_and_crashes_are_refusals(children: BoundedChildren) -> None:
    with pytest.raises(ChildRefused, match=r"^not a cat$"):
        await children.run(WORK, ["refuse", "not a cat"], ROOMY, "testing")
    small = Bounds(memory_bytes=512 * 1024**2, seconds=60)
    with pytest.raises(ChildRefused, match="testing failed"):
        await children.run(WORK, ["allocate", str(1024**3)], small, "testing")
    with pytest.raises(ChildRefused, match="testing failed"):
        await children.run(WORK, ["crash"], ROOMY, "testing")
    hurried = Bounds(memory_bytes=1024**3, seconds=0.2)
    with pytest.raises(ChildRefused, match=r"testing took longer than 0\.2 s"):
        await children.run(WORK, ["sleep"], hurried, "testing")
    assert zygote_children(children) == []  # the sleeper was killed, not left running


async def test_a_cancelled_caller_kills_its_child(children: BoundedChildren) -> None:
    task = asyncio.create_task(children.run(WORK, ["sleep"], ROOMY, "testing"))
    await children.run(WORK, ["remember"], ROOMY, "testing")  # the zygote is up

    async def sleeping() -> bool:
        return len(zygote_children(children)) == 1

    await wait_until(sleeping)
    (pid,) = zygote_children(children)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(pid)


async def test_a_dead_zygote_is_started_again(children: BoundedChildren) -> None:
    await children.run(WORK, ["remember"], ROOMY, "testing")
    first = children.zygote_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)

    async def dead() -> bool:
        return not alive(first)

    await wait_until(dead)
    assert len(await children.run(WORK, ["remember"], ROOMY, "testing")) == 1
    assert children.zygote_pid not in (None, first)
