"""The garbage collector's pauses are recorded once per collection however many apps a
process serves, and start-up objects leave the collected generations."""

import gc

from app.ops.garbage_collection import freeze_startup_objects, recording_pauses
from app.ops.metrics import GC_PAUSE


def _full_collections() -> float:
    samples = GC_PAUSE.labels("2").collect()[0].samples
    return next(sample.value for sample in samples if sample.name.endswith("_count"))


def test_each_collection_is_recorded_once_while_any_app_records() -> None:
    before = _full_collections()
    with recording_pauses(), recording_pauses():  # two apps in one process
        gc.collect()
        assert _full_collections() == before + 1
    gc.collect()  # no app records any more: the callback is gone
    assert _full_collections() == before + 1
    assert not [callback for callback in gc.callbacks if "PauseRecorder" in repr(callback)]


def test_start_up_objects_are_frozen_out_of_collections() -> None:
    try:
        kept = []  # an object alive at start-up
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        assert not any(obj is kept for obj in gc.get_objects())  # no collection walks it
    finally:
        gc.unfreeze()
