"""Untrusted bytes decoded in a child process whose memory, CPU time and wall time are
bounded for real (a thread cannot be stopped; a process can be killed), forked from a warm
parent so that no file pays for starting Python and importing its decoders.

`BoundedChildren` starts one zygote per process (`app/kit/zygote.py`), on first use, with a
minimal environment and no file descriptor of ours but its pipes: a fork of the server
would carry every secret in its memory, a fork of the zygote carries none. For each file
the zygote forks one child, which caps its own address space and CPU time, runs one
function on one file and exits: nothing survives from one file to the next. The child
answers on its own connection (its pid first, then one JSON line); it is killed past its
deadline or when the caller is cancelled, and always waited for (through its pidfd, which
no other process can take over), so a slot guarding it is held until it is gone. A zygote that died
is started again and the request tried once more.
"""

import asyncio
import json
import logging
import math
import os
import signal
import sys
import tempfile
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# What the zygote and its children see of the environment: no secret of the server's.
CHILD_ENVIRONMENT = {"PATH": os.defpath, "LC_ALL": "C.UTF-8"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # where `python -m app.kit.zygote` resolves
ZYGOTE_START_SECONDS = 60.0  # its imports, on a loaded machine
GONE_SECONDS = 5.0  # a killed child's exit, at most
ANSWER_BYTES = 32 * 1024 * 1024  # a line's cap: the probe's answer carries a poster JPEG
logger = logging.getLogger(__name__)


class ChildRefused(Exception):
    """The child refused the file, ran out of its time or memory, or crashed. Raised in the
    child by the function it runs, with a reason a user may read."""


@dataclass(frozen=True, slots=True)
class Bounds:
    memory_bytes: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Request:
    """What the zygote's child runs: `module.in_child(args)`, within the limits."""

    module: str
    args: list[str]
    memory_bytes: int
    cpu_seconds: int


class ZygoteGone(Exception):
    """The zygote did not take the request: it died (it is started again once)."""


class BoundedChildren:
    """One per process: the zygote, started on first use and ended by `close`."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="zygote-")
        self._socket_path = str(Path(self._folder.name) / "zygote.sock")
        self._zygote: asyncio.subprocess.Process | None = None
        self._starting = asyncio.Lock()

    async def run(self, module: str, args: list[str], bounds: Bounds, what: str) -> Any:
        """The child's JSON answer; ChildRefused with a reason a user may read otherwise
        (`what` names the work in it: "checking the video")."""
        cpu_seconds = math.ceil(bounds.seconds) + 1
        request = Request(module, args, bounds.memory_bytes, cpu_seconds)
        try:
            return await self._run(request, bounds.seconds, what)
        except ZygoteGone:
            await self._restart()
            return await self._run(request, bounds.seconds, what)

    @property
    def zygote_pid(self) -> int | None:
        return None if self._zygote is None else self._zygote.pid

    async def close(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await _end(zygote)
        self._folder.cleanup()

    async def _run(self, request: Request, seconds: float, what: str) -> Any:
        reader, writer = await self._connect()
        forking = asyncio.ensure_future(_fork(reader, writer, request))
        child: int | None = None  # its pidfd: a pid the kernel cannot hand to another
        try:
            child = await asyncio.shield(forking)
            try:
                async with asyncio.timeout(seconds):
                    answer = await reader.readline()
            except TimeoutError:
                raise ChildRefused(f"{what} took longer than {seconds:g} s") from None
        finally:
            if child is None:  # cancelled while the zygote forked: its pid comes at once
                child = await _forked(forking)
            if child is not None:  # killed if it is still at work, and always waited for
                with suppress(ProcessLookupError):
                    signal.pidfd_send_signal(child, signal.SIGKILL)
                await asyncio.shield(_exited(child))
            writer.close()
        if not answer:  # killed by its memory or CPU limit, or crashed
            raise ChildRefused(f"{what} failed (the process ended without an answer)")
        outcome = json.loads(answer)
        if "refused" in outcome:
            raise ChildRefused(str(outcome["refused"])[:500])
        return outcome["answer"]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._zygote is None or self._zygote.returncode is not None:
            await self._restart()
        try:
            return await asyncio.open_unix_connection(self._socket_path, limit=ANSWER_BYTES)
        except OSError:
            raise ZygoteGone from None

    async def _restart(self) -> None:
        async with self._starting:
            if self._zygote is not None and self._zygote.returncode is None:
                if await self._answers():
                    return
                await _end(self._zygote)
            self._zygote = await _start_zygote(self._socket_path)

    async def _answers(self) -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(self._socket_path)
        except OSError:
            return False
        writer.close()
        return True


async def _start_zygote(socket_path: str) -> asyncio.subprocess.Process:
    zygote = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "app.kit.zygote", socket_path),
        stdin=asyncio.subprocess.PIPE,  # the zygote ends when this closes: when we do
        stdout=asyncio.subprocess.PIPE,  # one line: "ready", or why not
        stderr=asyncio.subprocess.DEVNULL,
        env=CHILD_ENVIRONMENT,
        cwd=PROJECT_ROOT,
        close_fds=True,
    )
    assert zygote.stdout is not None
    async with asyncio.timeout(ZYGOTE_START_SECONDS):
        said = await zygote.stdout.readline()
    if said.strip() != b"ready":
        await _end(zygote)
        raise RuntimeError(f"the decoding zygote did not start: {said.decode(errors='replace')}")
    return zygote


async def _end(zygote: asyncio.subprocess.Process) -> None:
    """Close its stdin (it exits), and kill it if it does not."""
    if zygote.stdin is not None:
        zygote.stdin.close()
    try:
        async with asyncio.timeout(GONE_SECONDS):
            await zygote.wait()
    except TimeoutError:
        zygote.kill()
        await zygote.wait()


async def _fork(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request
) -> int | None:
    """Send the request; the child's pidfd once it sent its pid (None: it ended already)."""
    writer.write(json.dumps(asdict(request)).encode() + b"\n")
    await writer.drain()
    first = await reader.readline()
    if not first:
        raise ZygoteGone
    try:
        return os.pidfd_open(int(first))
    except ProcessLookupError:  # it answered at once
        return None


async def _forked(forking: "asyncio.Future[int | None]") -> int | None:
    """The child's pidfd, if the zygote forked one (after a cancel: it will not be used)."""
    try:
        async with asyncio.timeout(GONE_SECONDS):
            return await asyncio.shield(forking)
    except Exception:  # the zygote is gone or hung: there is no child to wait for
        return None


async def _exited(pidfd: int) -> None:
    """Until the child has exited (its pidfd turns readable), then the pidfd closed."""
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    loop.add_reader(pidfd, exited.set_result, None)
    try:
        async with asyncio.timeout(GONE_SECONDS):
            await exited
    except TimeoutError:
        logger.error("a decoding child outlived SIGKILL by %s s", GONE_SECONDS)
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
