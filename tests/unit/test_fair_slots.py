"""FairSlots: one user holds at most half, a user holding none is served next, waits are
bounded, and a waiter that leaves takes nothing with it."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from app.kit.fair_slots import FairSlots, SlotsBusy

LONG = 3600.0  # a wait no test reaches


@contextlib.asynccontextmanager
async def holding(slots: FairSlots, key: str, wait: float = LONG) -> AsyncIterator[None]:
    async with slots.hold(key, wait):
        yield


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_one_user_holds_at_most_half_and_a_newcomer_is_served_at_once() -> None:
    slots = FairSlots(4, per_key=2)
    release = asyncio.Event()
    order: list[str] = []

    async def work(key: str) -> None:
        async with slots.hold(key, LONG):
            order.append(key)
            await release.wait()

    bombs = [asyncio.create_task(work("mallory")) for _ in range(8)]
    await settle()
    assert (slots.held_by("mallory"), slots.waiting()) == (2, 6)
    photo = asyncio.create_task(work("alice"))
    await settle()
    assert order[-1] == "alice" and slots.held_by("alice") == 1  # no wait behind mallory
    release.set()
    await asyncio.gather(*bombs, photo)
    assert slots.in_use == 0 and slots.waiting() == 0


async def test_a_freed_slot_goes_to_the_waiter_holding_the_fewest() -> None:
    slots = FairSlots(2, per_key=2)
    gates = {name: asyncio.Event() for name in ("a1", "a2", "a3", "b1")}
    taken: list[str] = []

    async def work(key: str, name: str) -> None:
        async with slots.hold(key, LONG):
            taken.append(name)
            await gates[name].wait()

    tasks = [asyncio.create_task(work("a", "a1")), asyncio.create_task(work("a", "a2"))]
    await settle()
    tasks.append(asyncio.create_task(work("a", "a3")))  # waits first
    await settle()
    tasks.append(asyncio.create_task(work("b", "b1")))  # waits second, holds none
    await settle()
    assert taken == ["a1", "a2"]
    gates["a1"].set()
    await settle()
    assert taken == ["a1", "a2", "b1"]  # b holds none: served before a's older waiter
    for gate in gates.values():
        gate.set()
    await asyncio.gather(*tasks)
    assert taken == ["a1", "a2", "b1", "a3"]


async def test_a_wait_past_its_bound_is_busy_and_leaves_the_line() -> None:
    slots = FairSlots(1, per_key=1)
    async with holding(slots, "a"):
        with pytest.raises(SlotsBusy):
            async with slots.hold("b", 0.01):
                pass
        assert slots.waiting() == 0
    assert slots.in_use == 0
    async with holding(slots, "b"):  # the slot is free again for anyone
        assert slots.held_by("b") == 1


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    slots = FairSlots(1, per_key=1)
    async with holding(slots, "a"):
        waiter = asyncio.create_task(slots.hold("b", LONG).__aenter__())
        await settle()
        assert slots.waiting() == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert slots.waiting() == 0
    assert slots.in_use == 0
