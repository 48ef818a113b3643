"""Processes as /proc shows them: what the tests and benchmarks of bounded children look at."""

from pathlib import Path


def alive(pid: int) -> bool:
    """Neither gone nor only its exit status left to collect."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before or while it was read
        return False
    return "State:\tZ" not in state and "State:\tX" not in state


def children_of(parent: int) -> list[int]:
    """The live processes `parent`'s main thread forked (as the event loop's subprocesses
    and the zygote's children are)."""
    try:
        listed = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:  # it ended
        return []
    return [pid for pid in map(int, listed) if alive(pid)]


def descendants_of(parent: int) -> list[int]:
    """Its children and theirs: a server's decoding children are its zygote's."""
    found = children_of(parent)
    return found + [grandchild for child in found for grandchild in descendants_of(child)]
