"""CPython's cyclic garbage collector, the one pause the event loop cannot schedule around.

A full collection walks every tracked object while the loop waits. A live stream holds
about 200 of them (the middleware stack's coroutines and closures, the request, the
transport, the feed's generators), so at 10,000 open streams a full collection took 1.2-1.5 s
on the 2-core benchmark machine: every request and every stream waited that long. Its
length follows the objects alive, its frequency the objects that outlive young
collections (CPython 3.11 runs one when those reach a quarter of the old ones).

Three measures. The objects of start-up (modules, classes, routes, models: about 220,000)
are frozen out of every later collection once the process is ready. What survives a full
collection is frozen too, so the next one walks only what came since (bench.sse_fanout at
10,000 streams: callback -> event p99 1,342 -> 125 ms; the two full collections of its
window 2.54 -> 0.34 s). Frozen objects are never collected, and a closed stream leaves
some cyclic garbage (about 60 objects, measured by thawing after 900 streams had opened
and closed): once the frozen objects grow by half (THAW_GROWTH) they are thawed, and the
next full collection walks them all and frees that garbage, one long pause where CPython
alone would take one at every quarter of growth. And every pause is recorded
(`seedance_gc_pause_seconds{generation}`), so an operator sees this cost rather than
guessing at it behind a p99.
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


THAW_GROWTH = 1.5  # frozen objects, against the count frozen after the last thaw


class _Collections:
    """One per process, however many apps it serves (the tests run several): through
    `gc.callbacks` (start and stop come in pairs, on the thread that triggered the
    collection), each collection timed for the metric, and after each full collection
    its survivors frozen, or thawed once they have grown by THAW_GROWTH."""

    def __init__(self) -> None:
        self._started = 0.0
        self._users = 0
        self._thaw_at: int | None = None
        self._frozen = 0  # after our last freeze

    @contextmanager
    def managed(self) -> Iterator[None]:
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
        if info["generation"] == 2:
            self._after_full_collection()

    def _after_full_collection(self) -> None:
        frozen = gc.get_freeze_count()
        if frozen < self._frozen:  # thawed by someone else: counted from here
            self._thaw_at = None
        if self._thaw_at is not None and frozen >= self._thaw_at:
            gc.unfreeze()  # the next full collection walks everything, garbage included
            self._thaw_at, self._frozen = None, 0
            return
        gc.freeze()
        self._frozen = gc.get_freeze_count()
        if self._thaw_at is None:
            self._thaw_at = round(self._frozen * THAW_GROWTH)


managed_collections = _Collections().managed
