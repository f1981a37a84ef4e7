"""The work one relayed message costs: Bot API calls and storage round trips.

A round trip is one call of the repository port: each is one transaction on SQLite (and
one command on the network backends). The count is taken by wrapping the real SQLite
repository; the Bot API calls are read from the fake server's record.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from conftest import bot_env
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.domain.flood import FloodRule
from messagine.runtime import build_runtime
from messagine.settings import Settings
from messagine.storage.sqlite import SqliteRepository

UNLIMITED = FloodRule(limit=10_000)


class RecordingRepository:
    """The real repository, with every port call counted by method name."""

    def __init__(self, inner: SqliteRepository) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def backend(self) -> str:
        return self.inner.backend

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def test_a_relayed_text_costs_one_bot_api_call_and_four_round_trips(
    fake_api: FakeBotApi, tmp_path: Path
):
    path = tmp_path / "count.sqlite3"
    repository = RecordingRepository(SqliteRepository(path, flood_rule=UNLIMITED))
    runtime = build_runtime(Settings.from_env(bot_env(fake_api, path)),
                            repository=repository)  # type: ignore[arg-type]
    alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        runtime.pipeline.process(update)

    per_message = []
    for i in range(20):
        repository.calls.clear()
        fake_api.reset_calls()
        sender = alice if i % 2 else bob
        assert runtime.pipeline.process(sender.text(f"message {i}")).outcome == "relayed"
        per_message.append((sum(repository.calls.values()), [c.method for c in fake_api.calls]))
    assert all(api == ["copyMessage"] for _, api in per_message)
    # Claim (and load the sender); after the copy, check its chat still lasts; record the
    # copy's link; mark the claim done.
    assert {trips for trips, _ in per_message} == {4}
    assert repository.calls == {"open_update": 1, "get_user": 1, "record_message": 1,
                                "finish_update": 1}

    # A reply costs one lookup more, to find the message it answers on the other side.
    repository.calls.clear()
    fake_api.reset_calls()
    runtime.pipeline.process(alice.text("a reply", reply_to=alice.last()["message_id"]))
    assert repository.calls == {"open_update": 1, "find_message": 1, "get_user": 1,
                                "record_message": 1, "finish_update": 1}
    assert [c.method for c in fake_api.calls] == ["copyMessage"]
