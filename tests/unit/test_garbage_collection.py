"""The garbage collector's pauses are recorded once per collection however many apps a
process serves; start-up objects, and the survivors of collections of the middle or old
generation, leave the collected generations until the thaw."""

import gc

from app.ops.garbage_collection import freeze_startup_objects, managed_collections
from app.ops.metrics import GC_PAUSE


def _full_collections() -> float:
    samples = GC_PAUSE.labels("2").collect()[0].samples
    return next(sample.value for sample in samples if sample.name.endswith("_count"))


def test_each_collection_is_recorded_once_while_any_app_records() -> None:
    before = _full_collections()
    with managed_collections(0), managed_collections(0):  # two apps in one process
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


def test_survivors_are_frozen_out_of_collections_until_the_thaw() -> None:
    gc.disable()  # only the collections below: an automatic one would freeze in between
    try:
        with managed_collections(thaw_seconds=3600):
            kept: list[object] = []  # outlives a collection of the middle generation
            gc.collect(1)
            assert not any(obj is kept for obj in gc.get_objects())  # frozen: walked by none
            young: list[object] = []
            gc.collect(0)  # a young collection freezes nothing: its survivors are walked on
            assert any(obj is young for obj in gc.get_objects())
        with managed_collections(thaw_seconds=0):  # the thaw is due at every collection
            gc.collect(1)
            assert gc.get_freeze_count() == 0  # thawed: the next full collection walks all
            assert any(obj is kept for obj in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.enable()
