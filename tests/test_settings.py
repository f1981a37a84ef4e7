"""Configuration: read once from the environment, every problem reported at once."""

from __future__ import annotations

import pytest

from messagine.settings import Settings, SettingsError

TOKEN = "424242:AAH-some_token_value_0123456789abcd"


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


def test_firestore_is_not_built_yet():
    with pytest.raises(SettingsError, match="STORAGE=firestore is not available"):
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "STORAGE": "firestore"})


@pytest.mark.parametrize(("env", "storage"), [
    ({}, "sqlite"),
    ({"MONGODB_URI": "mongodb+srv://u:p@cluster0.example.net/"}, "mongo"),
    ({"MONGODB_URI": "mongodb://127.0.0.1:1/", "STORAGE": "sqlite"}, "sqlite"),
    ({"MONGODB_URI": "mongodb://127.0.0.1:1/", "STORAGE": "mongo"}, "mongo"),
])
def test_the_backend_choice(env: dict[str, str], storage: str):
    assert Settings.from_env({"TELEGRAM_TOKEN": TOKEN, **env}).storage == storage


@pytest.mark.parametrize("uri", ["", "postgres://x", "127.0.0.1:27017"])
def test_mongo_without_a_uri_is_a_clear_error(uri: str):
    with pytest.raises(SettingsError, match="STORAGE=mongo needs MONGODB_URI"):
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "STORAGE": "mongo", "MONGODB_URI": uri})


def test_the_mongodb_uri_is_a_secret():
    uri = "mongodb+srv://bot:s3cr3t-pa55@cluster0.example.net/"
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "MONGODB_URI": uri})
    assert "s3cr3t-pa55" not in repr(settings)
    assert settings.mongodb_uri is not None and settings.mongodb_uri.reveal() == uri
    assert settings.mongodb_database == "messagine"


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
