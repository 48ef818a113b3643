"""What the bounded-children tests ask a zygote's child to do (`in_child`), by name."""

import os
import time
from typing import Any

from app.kit.bounded_child import ChildRefused

REMEMBERED: list[int] = []  # a file's child must never see an earlier file's


def in_child(args: list[str]) -> Any:
    match args:
        case ["environment"]:
            return dict(os.environ)
        case ["descriptors"]:
            return {fd: _target(fd) for fd in os.listdir("/proc/self/fd")}
        case ["remember"]:
            REMEMBERED.append(os.getpid())
            return REMEMBERED
        case ["sleep"]:
            time.sleep(3600)
        case ["large", size]:
            return "x" * int(size)
        case ["allocate", size]:
            return len(bytearray(int(size)))
        case ["refuse", reason]:
            raise ChildRefused(reason)
        case ["crash"]:
            os._exit(7)
    raise AssertionError(args)


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the listing's own descriptor, closed by now
        return "gone"
