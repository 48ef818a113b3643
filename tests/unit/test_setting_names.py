"""A renamed setting still answers to its old name (deprecated), and the new name wins."""

import pytest

from app.config import Settings


def test_the_old_names_of_renamed_settings_are_still_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "o" * 40)
    monkeypatch.setenv("RATE_LIMIT_WEBHOOK", "5/minute")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.callback_secret.get_secret_value() == "o" * 40
    assert settings.rate_limit_callback == "5/minute"


def test_the_new_name_wins_over_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "o" * 40)
    monkeypatch.setenv("CALLBACK_SECRET", "n" * 40)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.callback_secret.get_secret_value() == "n" * 40
