"""The garbage collector's pauses are recorded once per collection however many apps a
process serves; start-up objects, and the survivors of full collections, leave the
collected generations until they have grown by half."""

import gc

from app.ops.garbage_collection import THAW_GROWTH, freeze_startup_objects, managed_collections
from app.ops.metrics import GC_PAUSE


def _full_collections() -> float:
    samples = GC_PAUSE.labels("2").collect()[0].samples
    return next(sample.value for sample in samples if sample.name.endswith("_count"))


def test_each_collection_is_recorded_once_while_any_app_records() -> None:
    before = _full_collections()
    with managed_collections(), managed_collections():  # two apps in one process
        gc.collect()
        assert _full_collections() == before + 1
    gc.collect()  # no app records any more: the callback is gone
    assert _full_collections() == before + 1
    assert not [callback for callback in gc.callbacks if "_Collections" in repr(callback)]
    gc.unfreeze()


def test_start_up_objects_are_frozen_out_of_collections() -> None:
    try:
        kept = []  # an object alive at start-up
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # no collection walks it
    finally:
        gc.unfreeze()


def test_survivors_of_full_collections_are_frozen_then_thawed_once_grown_by_half() -> None:
    gc.disable()  # only the collections below: an automatic one would thaw in between
    try:
        with managed_collections():
            gc.collect()
            frozen = gc.get_freeze_count()
            assert frozen > 0  # what survived: no later collection walks it
            kept = [[] for _ in range(round(frozen * THAW_GROWTH))]  # the heap grows
            gc.collect()
            assert gc.get_freeze_count() >= frozen * THAW_GROWTH
            gc.collect()  # grown by half: thawed, for the next full collection to walk
            assert gc.get_freeze_count() == 0
            assert any(obj is kept for obj in gc.get_objects())
            gc.collect()
            assert gc.get_freeze_count() > len(kept)  # frozen again, from a new count
    finally:
        gc.unfreeze()
        gc.enable()
