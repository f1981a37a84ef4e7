"""Expired records are purged by the scheduled job and by polling, in bounded batches,
never inside a user's webhook request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import flask
import pytest

from conftest import SECRET, Clock, bot_env
from messagine import reminders, webhook
from messagine.cli import run_polling
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.models import MessageLink
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.sqlite import SqliteRepository

DAY = 86_400.0


class CountingRepository:
    """A real SQLite repository that counts the purge calls made on it (and can slow them)."""

    def __init__(self, path: Path, purge_delay_s: float = 0.0) -> None:
        self.inner = SqliteRepository(path)
        self.purge_calls = 0
        self.purge_delay_s = purge_delay_s

    def purge_expired(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        self.purge_calls += 1  # counted before the call binds, whatever the signature
        time.sleep(self.purge_delay_s)
        return self.inner.purge_expired(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def expired_messages(repository: Any, count: int, now: float) -> None:
    for number in range(count):
        repository.record_message(MessageLink(1, 10, number, 11, 100_000 + number, "text",
                                              now - 31 * DAY))


def runtime_on(fake_api: FakeBotApi, repository: Any, clock: Clock, tmp_path: Path,
               **extra: str) -> Runtime:
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "unused.sqlite3", **extra))
    return build_runtime(settings, repository=repository, clock=clock)


def test_the_job_purges_everything_expired_in_batches(
        fake_api: FakeBotApi, tmp_path: Path, clock: Clock):
    repository = CountingRepository(tmp_path / "job.sqlite3")
    runtime = runtime_on(fake_api, repository, clock, tmp_path)
    expired_messages(repository, 2 * reminders.PURGE_BATCH + 1, clock())
    summary = runtime.reminders.run()
    assert summary.purged == {"messages": 2 * reminders.PURGE_BATCH + 1, "claims": 0,
                              "chats": 0, "reports": 0, "exclusions": 0, "age_refusals": 0}
    assert summary.as_dict()["purged"] == summary.purged
    assert repository.purge_calls == 3, "batches of PURGE_BATCH until one is not full"
    assert runtime.reminders.run().purged == {"messages": 0, "claims": 0, "chats": 0,
                                              "reports": 0, "exclusions": 0, "age_refusals": 0}


def test_the_job_purges_only_within_its_share_of_the_budget(
        fake_api: FakeBotApi, tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(reminders, "PURGE_BATCH", 1)
    repository = CountingRepository(tmp_path / "slow.sqlite3", purge_delay_s=0.2)
    runtime = runtime_on(fake_api, repository, clock, tmp_path, REMINDER_RUN_SECONDS="5")
    expired_messages(repository, 100, clock())
    started = time.monotonic()
    summary = runtime.reminders.run()
    # A quarter of 5 s at 0.2 s a call: about 7 calls, far from the 100 it would take.
    assert time.monotonic() - started < 3.0
    assert 3 <= repository.purge_calls <= 10
    assert summary.purged["messages"] == repository.purge_calls


def test_a_webhook_request_never_purges(fake_api: FakeBotApi, tmp_path: Path, clock: Clock):
    repository = CountingRepository(tmp_path / "hook.sqlite3")
    runtime = runtime_on(fake_api, repository, clock, tmp_path)
    expired_messages(repository, 3, clock())
    alice = fake_api.user(1, "Alice")
    app = flask.Flask(__name__)
    for update in (alice.command("start"), alice.command("help"), alice.command("find_chat")):
        with app.test_request_context("/", method="POST", json=update,
                                      headers={webhook.SECRET_HEADER: SECRET}):
            assert webhook.handle(flask.request, runtime)[1] == 200
        clock.advance(2 * 3600)
    assert alice.last()["text"], "the requests were answered"
    assert repository.purge_calls == 0
    assert runtime.reminders.run().purged["messages"] == 3, "the job purges what is left"


def test_polling_purges_on_its_loop(fake_api: FakeBotApi, tmp_path: Path, clock: Clock):
    repository = CountingRepository(tmp_path / "poll.sqlite3")
    runtime = runtime_on(fake_api, repository, clock, tmp_path)
    expired_messages(repository, 3, clock())
    alice = fake_api.user(1, "Alice")
    fake_api.pending_updates = [alice.command("start")]
    assert run_polling(runtime, max_batches=2) == 0
    assert alice.last()["text"].startswith("Welcome to Messagine")
    assert repository.purge_calls == 1, "once an hour, not once per batch"
    assert repository.inner.find_message(1, 10, 0) is None
