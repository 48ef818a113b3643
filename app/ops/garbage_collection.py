"""CPython's cyclic garbage collector, the one pause the event loop cannot schedule around.

A full collection walks every tracked object while the loop waits. A live stream holds
about 200 of them (the middleware stack's coroutines and closures, the request, the
transport, the feed's generators), so at 10,000 open streams a full collection took 1.2-1.5 s
on the 2-core benchmark machine: every request and every stream waited that long. Its
length follows the objects alive, its frequency the objects that outlive young
collections (CPython 3.11 runs one when those reach a quarter of the old ones).

Three measures. The objects of start-up (modules, classes, routes, models: about 220,000)
are frozen out of every later collection once the process is ready. So is, after each
collection of the middle or old generation, whatever survived it: full collections then
walk almost nothing (bench.sse_fanout at 10,000 streams: callback -> event p99 1,342 ->
30 ms, no full collection in its window; freezing only after full collections gave
571-765 ms, as each still walked the quarter of the heap that came since). Frozen objects
are never collected, and some die in cycles (a closed stream, a finished request: about 4
objects a request, measured by thawing after a minute of requests), so every
GC_THAW_SECONDS (300) all are thawed and the next full collection walks them and frees
that garbage: one long pause in five minutes, where CPython alone takes one at every
quarter of growth, for garbage held up to five minutes (28 MB a minute at 300 requests a
second). And every pause is recorded (`seedance_gc_pause_seconds{generation}`), so an
operator sees this cost rather than guessing at it behind a p99.
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


class _Collections:
    """One per process, however many apps it serves (the tests run several): through
    `gc.callbacks` (start and stop come in pairs, on the thread that triggered the
    collection), each collection timed for the metric; after each collection of the
    middle or old generation its survivors frozen (`gc.freeze` is O(1): two lists
    merged), and every GC_THAW_SECONDS all thawed for the next full collection to walk
    (0: nothing frozen)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._users = 0
        self._thawed = time.monotonic()
        self._thaw_seconds = 0.0

    @contextmanager
    def managed(self, thaw_seconds: float) -> Iterator[None]:
        self._thaw_seconds = thaw_seconds  # one policy per process: the latest app's
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
            return
        GC_PAUSE.labels(str(info["generation"])).observe(time.perf_counter() - self._started)
        if info["generation"] == 0:
            return
        if time.monotonic() - self._thawed >= self._thaw_seconds:
            gc.unfreeze()  # the next full collection walks everything, garbage included
            self._thawed = time.monotonic()
        else:
            gc.freeze()


managed_collections = _Collections().managed
