"""Configuration: read once from the environment, every problem reported at once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messagine.models import Periods
from messagine.settings import Secret, Settings, SettingsError
from messagine.storage.registry import FirestoreOptions, MongoOptions, SqliteOptions, options

TOKEN = "424242:AAH-some_token_value_0123456789abcd"


def test_defaults():
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN})
    assert settings.telegram_api_url == "https://api.telegram.org"
    assert settings.storage == "sqlite"
    assert settings.storage_options == SqliteOptions("messagine.sqlite3")
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


MONGO = {"MONGODB_URI": "mongodb+srv://u:p@cluster0.example.net/"}
CLOUD = {"K_SERVICE": "messagine", "ERASURE_PEPPER": "test-erasure-pepper-0123456789"}
EMULATOR = {"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8681", "GOOGLE_CLOUD_PROJECT": "demo-x"}


# The README's table, row by row.
@pytest.mark.parametrize(("env", "storage"), [
    ({}, "sqlite"),
    (MONGO, "mongo"),
    ({**MONGO, **CLOUD}, "mongo"),
    ({**MONGO, **EMULATOR}, "mongo"),
    (CLOUD, "firestore"),
    # functions-framework sets FUNCTION_TARGET on a laptop too: not a sign of Google Cloud.
    ({"FUNCTION_TARGET": "webhook"}, "sqlite"),
    ({**CLOUD, "FUNCTION_TARGET": "webhook"}, "firestore"),
    (EMULATOR, "firestore"),
    ({"GOOGLE_CLOUD_PROJECT": "p"}, "sqlite"),
    ({**MONGO, "STORAGE": "sqlite"}, "sqlite"),
    ({**CLOUD, "STORAGE": "sqlite"}, "sqlite"),
    ({**MONGO, "STORAGE": "mongo"}, "mongo"),
    ({**MONGO, **CLOUD, "STORAGE": "firestore"}, "firestore"),
    ({"STORAGE": "firestore", "GOOGLE_CLOUD_PROJECT": "p"}, "firestore"),
    ({"STORAGE": "FireStore", **EMULATOR}, "firestore"),
])
def test_the_backend_choice(env: dict[str, str], storage: str):
    assert Settings.from_env({"TELEGRAM_TOKEN": TOKEN, **env}).storage == storage


def test_firestore_settings():
    def firestore(**env: str) -> FirestoreOptions:
        return options(Settings.from_env({"TELEGRAM_TOKEN": TOKEN, **env}), FirestoreOptions)

    assert firestore(**EMULATOR, FIRESTORE_DATABASE="bots") == FirestoreOptions(
        "demo-x", "bots", "127.0.0.1:8681")
    on_cloud = firestore(**CLOUD)
    assert on_cloud.project is None, "Cloud Functions: the client finds the project"
    assert on_cloud.database == "(default)"
    assert firestore(**EMULATOR, FIRESTORE_PROJECT="other").project == "other"


@pytest.mark.parametrize(("env", "problem"), [
    ({"STORAGE": "firestore"}, "STORAGE=firestore needs a project id"),
    ({"FIRESTORE_EMULATOR_HOST": "127.0.0.1:8681"}, "any id works, e.g. demo-test"),
    ({**CLOUD, "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8681"}, "needs a project id"),
    ({**EMULATOR, "FIRESTORE_EMULATOR_HOST": "http://127.0.0.1:8681"},
     "FIRESTORE_EMULATOR_HOST must be host:port"),
    ({**CLOUD, "STORAGE": "mongo"}, "STORAGE=mongo needs MONGODB_URI"),
    ({"STORAGE": "dynamo"}, "STORAGE must be one of auto, sqlite, mongo, firestore"),
])
def test_a_backend_without_its_settings_is_a_clear_start_up_error(
        env: dict[str, str], problem: str):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, **env})
    assert len(caught.value.problems) == 1
    assert problem in caught.value.problems[0]


@pytest.mark.parametrize("uri", ["", "postgres://x", "127.0.0.1:27017"])
def test_mongo_without_a_uri_is_a_clear_error(uri: str):
    with pytest.raises(SettingsError, match="STORAGE=mongo needs MONGODB_URI"):
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "STORAGE": "mongo", "MONGODB_URI": uri})


def test_the_mongodb_uri_is_a_secret():
    uri = "mongodb+srv://bot:s3cr3t-pa55@cluster0.example.net/"
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "MONGODB_URI": uri})
    assert "s3cr3t-pa55" not in repr(settings)
    assert options(settings, MongoOptions) == MongoOptions(uri, "messagine")


def test_values_are_parsed():
    settings = Settings.from_env({
        "TELEGRAM_TOKEN": TOKEN, "WEBHOOK_SECRET": "abc_DEF-123", "STORAGE": "SQLite",
        "ADMIN_IDS": " 5, 6 ,,-7", "RECENT_PARTNERS": "0",
        "TELEGRAM_API_URL": "http://127.0.0.1:8081/", "SQLITE_PATH": "/tmp/x.db"})
    assert settings.storage_options == SqliteOptions("/tmp/x.db")
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


@pytest.mark.parametrize(("env", "structured"), [
    ({}, False), ({"FUNCTION_TARGET": "webhook"}, False), (CLOUD, True),
    ({"FUNCTION_TARGET": "webhook", "LOG_FORMAT": "json"}, True),
    ({**CLOUD, "LOG_FORMAT": "text"}, False),
])
def test_logs_are_structured_only_on_google_cloud(env: dict[str, str], structured: bool):
    """functions-framework sets FUNCTION_TARGET on a laptop: text logs there."""
    full = {"TELEGRAM_TOKEN": TOKEN, "STORAGE": "sqlite", **env}
    assert Settings.from_env(full, require_webhook_secret=False).structured_logs is structured


def test_the_request_timeout_bounds_the_bot_api_timeout():
    base = {"TELEGRAM_TOKEN": TOKEN}
    assert Settings.from_env(base).request_timeout_s == 50.0
    assert Settings.from_env(base | {"REQUEST_TIMEOUT_SECONDS": "12",
                                     "TELEGRAM_TIMEOUT_SECONDS": "5"}).request_timeout_s == 12
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(base | {"REQUEST_TIMEOUT_SECONDS": "8",
                                  "TELEGRAM_TIMEOUT_SECONDS": "10"})
    assert [p.split()[0] for p in caught.value.problems] == ["TELEGRAM_TIMEOUT_SECONDS"]


PERIOD_NAMES = ("AGE_REFUSAL_DAYS", "IDLE_CHAT_HOURS", "REPORT_RETENTION_DAYS",
                "EXCLUSION_RETENTION_DAYS", "INACTIVE_ACCOUNT_DAYS", "INACTIVE_NOTICE_DAYS")


def test_the_retention_periods_are_read_and_checked():
    settings = Settings.from_env({"TELEGRAM_TOKEN": TOKEN, **dict(zip(
        PERIOD_NAMES, ("7", "24", "90", "60", "200", "10"), strict=True))})
    assert settings.periods == Periods(age_refusal_days=7, idle_chat_hours=24, report_days=90,
                                       exclusion_days=60, inactive_days=200, notice_days=10)
    assert Settings.from_env({"TELEGRAM_TOKEN": TOKEN}).periods == Periods()


@given(value=st.one_of(st.text(max_size=12), st.integers(-10**30, 10**30).map(str)))
def test_a_bad_period_is_a_clear_start_up_error(value: str):
    for name in PERIOD_NAMES:
        env = {"TELEGRAM_TOKEN": TOKEN, name: value}
        try:
            settings = Settings.from_env(env)
        except SettingsError as error:
            assert any(name in problem for problem in error.problems), (name, value)
        else:
            assert settings.periods.notice_days < settings.periods.inactive_days


def test_the_notice_must_come_before_the_erasure():
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"TELEGRAM_TOKEN": TOKEN, "INACTIVE_ACCOUNT_DAYS": "10",
                           "INACTIVE_NOTICE_DAYS": "10"})
    assert caught.value.problems == [
        "INACTIVE_NOTICE_DAYS must be less than INACTIVE_ACCOUNT_DAYS"]


def test_the_erasure_pepper_is_required_on_google_cloud_and_derived_elsewhere():
    base = {"TELEGRAM_TOKEN": TOKEN, "STORAGE": "sqlite"}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**base, "K_SERVICE": "messagine"})
    assert [p.split()[0] for p in caught.value.problems] == ["ERASURE_PEPPER"]
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**base, "ERASURE_PEPPER": "short"})
    assert caught.value.problems == ["ERASURE_PEPPER must be 16+ characters"]
    configured = Settings.from_env({**base, **CLOUD})
    assert configured.erasure_pepper == Secret(CLOUD["ERASURE_PEPPER"])
    assert CLOUD["ERASURE_PEPPER"] not in repr(configured)
    local, again = Settings.from_env(base), Settings.from_env(base)
    assert local.erasure_pepper == again.erasure_pepper, "the same bot keeps its pepper"
    assert local.erasure_pepper is not None
    assert TOKEN not in local.erasure_pepper.reveal(), "derived, not the token itself"
    other = Settings.from_env({**base, "TELEGRAM_TOKEN": "987654321:" + "b" * 35})
    assert other.erasure_pepper != local.erasure_pepper


def test_the_webhook_on_google_cloud_needs_the_album_queue():
    """Nothing may run after the response there: no timer may flush albums."""
    base = {"TELEGRAM_TOKEN": TOKEN, "STORAGE": "sqlite", "WEBHOOK_SECRET": "s", **CLOUD}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(base, require_webhook_secret=True)
    assert [p.split()[0] for p in caught.value.problems] == ["ALBUM_QUEUE"]
    queue = {"ALBUM_QUEUE": "projects/p/locations/europe-west1/queues/albums",
             "ALBUM_FLUSH_URL": "https://europe-west1-p.cloudfunctions.net/messagine"}
    assert Settings.from_env(base | queue, require_webhook_secret=True).album_queue
    assert Settings.from_env(base).album_queue is None, "the scheduled job sends no album"
    local = {"TELEGRAM_TOKEN": TOKEN, "STORAGE": "sqlite", "WEBHOOK_SECRET": "s"}
    assert Settings.from_env(local, require_webhook_secret=True).album_queue is None
