"""Fair and bounded decoding of uploads (issue 37): files that cannot finish are refused
from their headers, one user's slow files leave the other slots to others, a wait is
bounded (503 `busy`), a client that leaves takes its child with it, and the children's
memory stays within its budget. Real HTTP, real children; the "slow file" of the slot
tests is a child that sleeps (`tests/bounded_work.py`), since every slow file we know of
is now refused from its header."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from app.kit.bounded_child import BoundedChildren, Bounds
from testkit.harness import Stack, running_stack, wait_until
from testkit.processes import alive, children_of
from tests import upload_files

MIB = 1024 * 1024
SLOW = b"SLOW"  # the first bytes of a file whose child only sleeps


class SlowFiles:
    """The real sanitizer, except for a file that starts with SLOW: its child sleeps, a
    stand-in for a decode that takes its whole deadline."""

    def __init__(self, real: BoundedChildren) -> None:
        self._real = real

    async def run(self, module: str, args: list[str], bounds: Bounds, doing: str) -> Any:
        if Path(args[0]).read_bytes()[: len(SLOW)] == SLOW:
            return await self._real.run("tests.bounded_work", ["sleep"], bounds, doing)
        return await self._real.run(module, args, bounds, doing)


@contextlib.asynccontextmanager
async def slow_stack(database_url: str, **settings: Any) -> AsyncIterator[Stack]:
    async with running_stack(database_url, **settings) as stack:
        services = stack.app.state.services
        services.uploads._children = SlowFiles(services.children)
        yield stack


def decoding_children(stack: Stack) -> list[int]:
    pid = stack.app.state.services.children.zygote_pid
    return children_of(pid) if pid is not None else []


async def send(stack: Stack, data: bytes, subject: str) -> httpx.Response:
    files = {"file": ("photo.jpg", data, "image/jpeg")}
    return await stack.http.post("/uploads", files=files, headers=stack.headers(subject))


async def test_a_jpeg_of_thousands_of_scans_is_refused_from_its_markers(
    database_url: str,
) -> None:
    async with running_stack(database_url) as stack:
        refused = await send(stack, upload_files.jpeg_scan_bomb(), "alice")
        assert (refused.status_code, refused.json()["code"]) == (422, "upload_invalid")
        assert "more than 100 scans" in refused.json()["detail"]
        fine = await send(stack, upload_files.jpeg_scan_bomb(scans=1), "alice")
        assert fine.status_code == 201, fine.text


async def test_an_image_whose_header_implies_more_memory_than_a_child_has_is_refused(
    database_url: str,
) -> None:
    async with running_stack(database_url, upload_sanitize_memory_bytes=256 * MIB) as stack:
        big = upload_files.png(3000, 3000)  # 3000 x 3000 x 4 bytes x 4 copies: 144 MiB
        refused = await send(stack, big, "alice")
        assert (refused.status_code, refused.json()["code"]) == (422, "upload_invalid")
        assert "MiB to decode; an upload may use 256 MiB" in refused.json()["detail"]
        fits = await send(stack, upload_files.png(1500, 1500), "alice")
        assert fits.status_code == 201, fits.text


async def test_one_users_slow_files_leave_half_the_slots_and_a_gone_client_kills_its_child(
    database_url: str,
) -> None:
    async with slow_stack(
        database_url,
        upload_sanitize_concurrency=4,
        upload_sanitize_memory_bytes=512 * MIB,  # 4 children fit the default 2 GiB
        upload_sanitize_wait_seconds=3600,
    ) as stack:
        slots = stack.app.state.services.uploads.sanitizing
        bombs = [asyncio.create_task(send(stack, SLOW + bytes(i), "mallory")) for i in range(8)]

        async def lined_up() -> bool:  # two children sleeping, six files waiting
            in_line = slots.held_by("mallory") == 2 and slots.waiting() == 6
            return in_line and len(decoding_children(stack)) == 2

        await wait_until(lined_up)
        photo = await send(stack, upload_files.phone_jpeg(), "alice")
        assert photo.status_code == 201, photo.text  # while mallory's children still run
        assert slots.held_by("mallory") == 2
        sleeping = decoding_children(stack)
        for bomb in bombs:  # mallory's clients give up: their connections close
            bomb.cancel()
        await asyncio.gather(*bombs, return_exceptions=True)

        async def all_gone() -> bool:
            return slots.in_use == 0 and slots.waiting() == 0

        await wait_until(all_gone)
        assert not any(alive(pid) for pid in sleeping)
        staging = stack.app.state.services.storage.staging_root
        await wait_until(lambda: asyncio.sleep(0, not list(staging.glob("upload-*"))))


async def test_a_wait_past_its_bound_is_busy_with_nothing_staged_left(database_url: str) -> None:
    async with slow_stack(
        database_url, upload_sanitize_concurrency=2, upload_sanitize_wait_seconds=0.5
    ) as stack:
        slots = stack.app.state.services.uploads.sanitizing
        first = asyncio.create_task(send(stack, SLOW, "mallory"))
        await wait_until(lambda: asyncio.sleep(0, slots.held_by("mallory") == 1))
        second = await send(stack, SLOW + b"2", "mallory")  # mallory's half is taken
        assert (second.status_code, second.json()["code"]) == (503, "busy")
        assert second.headers["Retry-After"] == "1"
        staging = stack.app.state.services.storage.staging_root
        assert len(list(staging.glob("upload-*"))) == 1  # the first's original only
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)


async def test_children_at_once_stay_within_the_memory_budget(database_url: str) -> None:
    async with slow_stack(
        database_url,
        upload_sanitize_concurrency=8,
        upload_sanitize_memory_bytes=256 * MIB,
        upload_sanitize_memory_total_bytes=512 * MIB,
        upload_sanitize_wait_seconds=3600,
    ) as stack:
        slots = stack.app.state.services.uploads.sanitizing
        assert (slots.slots, slots.per_key) == (2, 1)
        users = [f"user-{i}" for i in range(4)]
        files = [asyncio.create_task(send(stack, SLOW, user)) for user in users]

        async def full() -> bool:  # 2 x 256 MiB: the budget
            in_line = slots.in_use == 2 and slots.waiting() == 2
            return in_line and len(decoding_children(stack)) == 2

        await wait_until(full)
        for task in files:
            task.cancel()
        await asyncio.gather(*files, return_exceptions=True)
        await wait_until(lambda: asyncio.sleep(0, slots.in_use == 0))
