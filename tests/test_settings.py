"""Configuration: read once from the environment, every problem reported at once."""

from __future__ import annotations

import pytest

from messagine.settings import Settings, SettingsError

TOKEN = "123456789:AAH-some_token_value_0123456789abcd"


def test_defaults():
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN})
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.storage == "sqlite"
    assert settings.sqlite_path == "messagine.sqlite3"
    assert settings.admin_ids == frozenset()
    assert settings.recent_partners == 5
    assert settings.webhook_secret is None


def test_every_problem_is_reported_at_once():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TELEGRAM_TOKEN": "nope", "WEBHOOK_SECRET": "has spaces",
                           "TELEGRAM_API_URL": "ftp://x", "STORAGE": "redis",
                           "ADMIN_IDS": "1, two", "RECENT_PARTNERS": "-1",
                           "TELEGRAM_TIMEOUT_SECONDS": "999", "LOG_LEVEL": "LOUD"})
    problems = caught.value.problems
    assert len(problems) == 8
    for name in ("TELEGRAM_TOKEN", "WEBHOOK_SECRET", "TELEGRAM_API_URL", "STORAGE", "ADMIN_IDS",
                 "RECENT_PARTNERS", "TELEGRAM_TIMEOUT_SECONDS", "LOG_LEVEL"):
        assert any(p.startswith(name) for p in problems), name


def test_missing_token_and_secret_are_named():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}, require_webhook_secret=True)
    assert [p.split()[0] for p in caught.value.problems] == ["TELEGRAM_TOKEN", "WEBHOOK_SECRET"]
    assert "secrets.token_urlsafe" in str(caught.value)


@pytest.mark.parametrize("storage", ["mongo", "firestore"])
def test_backends_not_built_yet_are_a_clear_error(storage: str):
    with pytest.raises(SettingsError, match=f"STORAGE={storage} is not available"):
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "STORAGE": storage})


def test_values_are_parsed():
    settings = Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN, "WEBHOOK_SECRET": "abc_DEF-123", "STORAGE": "SQLite",
        "ADMIN_IDS": " 5, 6 ,,-7", "RECENT_PARTNERS": "0",
        "TELEGRAM_API_URL": "http://127.0.0.1:8081/", "SQLITE_PATH": "/tmp/x.db"})
    assert settings.storage == "sqlite"
    assert settings.admin_ids == frozenset({5, 6, -7})
    assert settings.recent_partners == 0
    assert settings.telegram_api_url == "http://127.0.0.1:8081"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.reveal() == "abc_DEF-123"


def test_secrets_never_show_in_repr_or_str():
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "WEBHOOK_SECRET": "hush_hush"})
    for text in (repr(settings), str(settings), f"{settings.telegram_token}"):
        assert TOKEN not in text and "hush_hush" not in text
        assert "AAH-some" not in text
