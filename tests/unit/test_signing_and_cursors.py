"""Callback URLs carry a per-job proof; list cursors round-trip and reject forgeries."""

import uuid
from datetime import UTC, datetime

import pytest

from app.config import Settings
from app.jobs.callbacks import callback_signature, callback_url, signature_is_valid
from app.kit.cursor import decode_cursor, encode_cursor
from app.kit.errors import ProblemError

SETTINGS = Settings(_env_file=None, public_base_url="https://bff.example.com/")  # type: ignore[call-arg]
OTHER_SECRET = Settings(_env_file=None, callback_secret="another-secret-entirely-000000000")  # type: ignore[call-arg]


def test_callback_url_names_the_job_and_carries_its_signature() -> None:
    job_id = uuid.uuid4()
    url = callback_url(SETTINGS, job_id)
    signature = callback_signature(SETTINGS, job_id)
    assert url == f"https://bff.example.com/webhooks/seedance/{job_id}?sig={signature}"
    assert signature_is_valid(SETTINGS, job_id, callback_signature(SETTINGS, job_id))


def test_signatures_do_not_transfer_between_jobs_or_secrets() -> None:
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    assert not signature_is_valid(SETTINGS, job_b, callback_signature(SETTINGS, job_a))
    assert not signature_is_valid(SETTINGS, job_a, callback_signature(OTHER_SECRET, job_a))
    assert not signature_is_valid(SETTINGS, job_a, "")


@pytest.mark.parametrize("forged", ["aé#", "\ud800", "\x00" * 64, "ß" * 64])
def test_any_text_is_a_wrong_signature_not_a_crash(forged: str) -> None:
    # found by contract fuzzing: non-ASCII text made compare_digest raise TypeError (a 500)
    assert not signature_is_valid(SETTINGS, uuid.uuid4(), forged)


def test_cursor_round_trip() -> None:
    when, job_id = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(when, job_id)) == (when, job_id)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "bm90IGpzb24", "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIngiXQ"]
)
def test_foreign_cursors_are_a_validation_error(cursor: str) -> None:
    with pytest.raises(ProblemError) as caught:
        decode_cursor(cursor)
    assert caught.value.status == 422
    assert caught.value.errors is not None and caught.value.errors[0].code == "invalid_cursor"
