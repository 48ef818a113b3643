"""A batch's shared base applies to every prompt exactly as the client wrote it."""

import pytest

from app.jobs.schemas import BatchCreate


@pytest.mark.parametrize(
    "base",
    [
        {},
        {"reference_video_urls": None, "images": None, "aspect_ratio": "adaptive"},
        {"images": ["https://cdn.example.com/a.png"], "duration": 5},
        {"reference_audio_urls": ["https://cdn.example.com/a.mp3"], "resolution": "480p"},
    ],
)
def test_variants_of_any_valid_base_are_valid_jobs(base: dict[str, object]) -> None:
    # found by contract fuzzing: explicit nulls in `base` made variants() raise (a 500)
    batch = BatchCreate.model_validate({"base": base, "prompts": ["a boat", "b boat"]})
    variants = batch.variants()
    assert [v.prompt for v in variants] == ["a boat", "b boat"]
    for variant in variants:
        for name, value in base.items():
            assert getattr(variant, name) == (value if value is not None else [])
