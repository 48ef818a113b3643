"""Untrusted bytes decoded in a child process whose memory, CPU time and wall time are
bounded for real (a thread cannot be stopped; a process can be killed).

The parent starts `python -m <module> ARGS... MEMORY_BYTES CPU_SECONDS`; the child calls
`limit_self()` with the last two arguments before it touches the file, and answers with
one JSON line on stdout, or `REFUSED` as its exit status and the reason on stderr. The
child is killed past `seconds` or when the caller is cancelled, and always waited for, so
a slot guarding it is held until it is gone.
"""

import json
import math
import resource
import sys
from dataclasses import dataclass
from typing import Any

REFUSED = 3  # the child's exit status for a file it judged and refused


class ChildRefused(Exception):
    """The child refused the file, ran out of its time or memory, or crashed."""


@dataclass(frozen=True, slots=True)
class Bounds:
    memory_bytes: int
    seconds: float


async def run_bounded(module: str, args: list[str], bounds: Bounds, what: str) -> Any:
    """The child's JSON answer; ChildRefused with a reason a user may read otherwise
    (`what` names the work in it: "checking the video")."""
    import asyncio  # here: every child imports this module, and asyncio is 30 ms of its start

    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", module, *args),
        *(str(bounds.memory_bytes), str(math.ceil(bounds.seconds) + 1)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(bounds.seconds):
            out, err = await process.communicate()
    except TimeoutError:
        raise ChildRefused(f"{what} took longer than {bounds.seconds:g} s") from None
    finally:
        if process.returncode is None:  # timed out, or the caller was cancelled
            process.kill()
            await process.wait()
    if process.returncode == REFUSED:
        raise ChildRefused(err.decode(errors="replace").strip()[:500])
    if process.returncode != 0:  # killed by its memory or CPU limit, or crashed
        raise ChildRefused(f"{what} failed (exit status {process.returncode})")
    return json.loads(out)


def limit_self(memory_bytes: str, cpu_seconds: str) -> None:
    """In the child: cap its address space and CPU time before any untrusted byte."""
    resource.setrlimit(resource.RLIMIT_AS, (int(memory_bytes), int(memory_bytes)))
    resource.setrlimit(resource.RLIMIT_CPU, (int(cpu_seconds), int(cpu_seconds)))


def refuse(reason: str) -> None:
    """In the child: end with the refusal's exit status and reason."""
    print(reason, file=sys.stderr)
    sys.exit(REFUSED)
