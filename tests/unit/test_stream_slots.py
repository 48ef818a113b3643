"""Live stream slots are given back however a stream ends, even one that never started."""

import gc
from collections.abc import AsyncIterator

import pytest

from app.jobs.live.stream_slots import StreamSlots
from app.kit.errors import ProblemError


async def two() -> AsyncIterator[int]:
    yield 1
    yield 2


async def test_a_stream_holds_its_slot_until_it_ends() -> None:
    slots = StreamSlots(per_user=1, per_replica=5)
    held = slots.hold("alice", two())
    with pytest.raises(ProblemError) as refused:
        slots.hold("alice", two())
    assert (refused.value.status, refused.value.code) == (429, "too_many_streams")
    assert [item async for item in held] == [1, 2]
    assert slots.open == 0


async def test_a_stream_cut_mid_way_gives_its_slot_back() -> None:
    slots = StreamSlots(per_user=2, per_replica=5)
    held = slots.hold("alice", two())
    assert await anext(held) == 1
    await held.aclose()  # what a client hanging up does to the response's iterator
    assert slots.open == 0


def test_a_stream_that_never_started_gives_its_slot_back() -> None:
    slots = StreamSlots(per_user=1, per_replica=1)
    held = slots.hold("alice", two())
    with pytest.raises(ProblemError) as full:
        slots.hold("bob", two())
    assert (full.value.status, full.value.code) == (503, "too_many_streams_on_replica")
    del held
    gc.collect()
    assert slots.open == 0
