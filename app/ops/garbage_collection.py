"""CPython's cyclic garbage collector, the one pause the event loop cannot schedule around.

A full collection walks every tracked object while the loop waits. A live stream holds
about 200 of them (the middleware stack's coroutines and closures, the request, the
transport, the feed's generators), so at 10,000 open streams a full collection took 1.2-1.5 s
on the 2-core benchmark machine: every request and every stream waited that long. Its
length follows the objects alive, its frequency the objects that outlive young
collections (CPython 3.11 runs one when those reach a quarter of the old ones).

Two measures: the objects of start-up (modules, classes, routes, models: about 220,000)
are frozen out of every later collection once the process is ready, and every pause is
recorded (`seedance_gc_pause_seconds{generation}`), so an operator sees this cost rather
than guessing at it behind a p99.
"""

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.ops.metrics import GC_PAUSE


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then move every surviving object to the
    permanent generation: collections skip it (reference counting still frees it)."""
    gc.collect()
    gc.freeze()


class _PauseRecorder:
    """Times each collection through `gc.callbacks` (start and stop come in pairs, on the
    thread that triggered the collection). One per process, however many apps it serves
    (the tests run several): the metric is process-wide too."""

    def __init__(self) -> None:
        self._started = 0.0
        self._users = 0

    @contextmanager
    def recording(self) -> Iterator[None]:
        if not self._users:
            gc.callbacks.append(self._observe)
        self._users += 1
        try:
            yield
        finally:
            self._users -= 1
            if not self._users:
                gc.callbacks.remove(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - self._started)


recording_pauses = _PauseRecorder().recording
