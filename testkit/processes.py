"""Processes as /proc shows them: what the tests of bounded children look at."""

from pathlib import Path


def alive(pid: int) -> bool:
    """Neither gone nor only its exit status left to collect."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in state and "State:\tX" not in state


def children_of(parent: int) -> list[int]:
    """The live processes `parent` forked."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{parent}\n" in status.read_text():
                found.append(int(status.parent.name))
        except OSError:
            continue
    return [pid for pid in found if alive(pid)]
