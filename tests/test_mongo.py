"""What only the MongoDB backend must show: commands per message, one client per process,
indexed queries, and an outage survived without losing or doubling a message."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
import pytest
from pymongo import monitoring

from conftest import (
    Clock,
    bot_env,
    mongo_database_name,
    redeliver_until_processed,
    serve_from_threads,
)
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.domain.flood import FloodRule, FloodState, admit
from messagine.models import Profile
from messagine.runtime import LazyRuntime, Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.mongo import MongoRepository
from support.mongo_server import MongoServer, mongoeco_python

pytestmark = pytest.mark.slow
# A suspended server: the socket timeout (10 s) ends the claim, the release attempt may
# take as long again; Telegram waits 60 s.
HANG_BOUND_S = 25.0


class CommandCounter(monitoring.CommandListener):
    """Counts the commands pymongo sends (heartbeats are not commands here)."""

    def __init__(self) -> None:
        self.commands: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands[event.command_name] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
def database(mongo_uri: str) -> Iterator[str]:
    name = mongo_database_name()
    yield name
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri)
    client.drop_database(name)
    client.close()


def test_a_relayed_text_costs_four_commands(fake_api: FakeBotApi, tmp_path: Path,
                                           mongo_uri: str, database: str):
    counter = CommandCounter()

    def client(*args: Any, **kwargs: Any) -> Any:
        return pymongo.MongoClient(*args, event_listeners=[counter], **kwargs)

    repository = MongoRepository(mongo_uri, database, client_factory=client,
                                 flood_rule=FloodRule(limit=10_000))
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "unused.sqlite3"))
    runtime = build_runtime(settings, repository=repository)
    alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        runtime.pipeline.process(update)
    for i in range(10):
        counter.commands.clear()
        fake_api.reset_calls()
        assert runtime.pipeline.process(alice.text(f"text {i}")).outcome == "relayed"
        # Claim and profile, the copy's chat still lasting, its link, the claim done.
        assert counter.commands == {"findAndModify": 1, "find": 1, "update": 2}, \
            counter.commands
        assert [c.method for c in fake_api.calls] == ["copyMessage"]
    repository.close()


def test_one_client_per_process_across_many_requests(
    fake_api: FakeBotApi, tmp_path: Path, mongo_uri: str, database: str,
    monkeypatch: pytest.MonkeyPatch,
):
    created: list[int] = []

    class CountedClient(pymongo.MongoClient):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            created.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pymongo, "MongoClient", CountedClient)
    env = {**bot_env(fake_api, tmp_path / "unused.sqlite3"), "STORAGE": "mongo",
           "MONGODB_URI": mongo_uri, "MONGODB_DATABASE": database}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    lazy = LazyRuntime(require_webhook_secret=True)
    users = [fake_api.user(1000 + i, f"U{i}") for i in range(8)]
    # The runtime is built by the first of the concurrent requests, not here.
    first_use = lambda u: lazy.get().pipeline.process(u)  # noqa: E731, PLW0108
    assert serve_from_threads(first_use, users, 8) == []
    assert len(fake_api.calls_of("sendMessage")) == 64
    assert len(created) == 1
    lazy.get().repository.close()  # type: ignore[attr-defined]


HOT_QUERIES = [
    ("users", {"_id": 1, "recent_updates": {"$ne": 5}}, None),
    ("users", {"recent_updates": 5}, None),
    ("message_links", {"_id": "1:5"}, None),
    ("message_links", {"recipient_id": 1, "copy_message_id": 5}, None),
    ("lobby", {"language": "en", "_id": {"$nin": [1]}, "avoid": {"$ne": 1}},
     [("since", 1), ("_id", 1)]),
    ("chats", {"users": 1}, [("started_at", -1)]),
    ("exclusions", {"user_id": 1}, None),
    ("exclusions", {"other_id": 1}, None),
    ("chats", {"closed_by_update": 7, "users": 1}, None),
]


def test_every_hot_query_is_served_by_an_index(mongo_uri: str, database: str):
    repository = MongoRepository(mongo_uri, database)
    repository.init_schema()
    db = repository.db
    for collection, query, sort in HOT_QUERIES:
        db[collection].replace_one({"_id": "probe"}, {"probe": True}, upsert=True)
        cursor = db[collection].find(query)
        if sort:
            cursor = cursor.sort(sort)
        plan = cursor.explain()
        if "queryPlanner" in plan:  # a real MongoDB (MONGODB_TEST_URI): its planner decides
            assert "COLLSCAN" not in json.dumps(plan["queryPlanner"]), (collection, query)
        else:  # mongoeco has no MongoDB planner: check that an index leads with the field
            first_field = next(iter(query))
            leading = {spec["key"][0][0] for spec in db[collection].index_information().values()}
            assert first_field in leading, (collection, query, leading)
    repository.close()


def test_init_db_is_idempotent(mongo_uri: str, database: str):
    repository = MongoRepository(mongo_uri, database)
    repository.init_schema()
    first = repository.db.message_links.index_information()
    repository.init_schema()
    assert repository.db.message_links.index_information() == first
    assert first["links_ttl"]["expireAfterSeconds"] == 0
    claims = repository.db.claimed_updates.index_information()
    assert claims["claims_ttl"]["expireAfterSeconds"] == 86_400
    repository.close()


def paired_on(server: MongoServer, fake_api: FakeBotApi, tmp_path: Path
              ) -> tuple[Runtime, FakeUser, FakeUser]:
    """The bot on ``server`` with Alice and Bob in a chat."""
    repository = MongoRepository(server.uri, "faults", flood_rule=FloodRule(limit=10_000))
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "unused.sqlite3"))
    runtime = build_runtime(settings, repository=repository, clock=Clock())
    alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        assert runtime.pipeline.process(update).status == 200
    return runtime, alice, bob


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MongoServer]:
    """A MongoDB server of this test's own, to stop or suspend."""
    python = mongoeco_python()
    if python is None:
        pytest.skip("no mongoeco environment to stop and restart")
    own = MongoServer(python, tmp_path / "faults.sqlite3")
    yield own
    own.stop()


def test_an_outage_answers_503_and_loses_or_doubles_nothing(
    fake_api: FakeBotApi, tmp_path: Path, server: MongoServer
):
    runtime, alice, bob = paired_on(server, fake_api, tmp_path)
    before = alice.text("sent before the outage")
    assert runtime.pipeline.process(before).outcome == "relayed"

    server.stop()
    during = alice.text("sent during the outage")
    result = runtime.pipeline.process(during)
    assert (result.status, result.outcome) == (503, "retry:storage")
    assert "sent during the outage" not in list(bob.texts())

    server.start()
    assert runtime.pipeline.process(during).outcome == "relayed"
    assert runtime.pipeline.process(during).outcome == "duplicate"
    assert runtime.pipeline.process(before).outcome == "duplicate"
    texts = list(bob.texts())
    assert texts.count("sent before the outage") == 1
    assert texts.count("sent during the outage") == 1
    runtime.repository.close()  # type: ignore[attr-defined]


def test_a_hanging_server_is_cut_off_by_the_client_timeouts(
    fake_api: FakeBotApi, tmp_path: Path, server: MongoServer
):
    runtime, alice, bob = paired_on(server, fake_api, tmp_path)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)  # connected, but never answers
    update = alice.text("while the server hangs")
    started = time.monotonic()
    result = runtime.pipeline.process(update)
    elapsed = time.monotonic() - started
    os.kill(server.process.pid, signal.SIGCONT)
    assert (result.status, result.outcome) == (503, "retry:storage")
    assert elapsed < HANG_BOUND_S, elapsed
    assert redeliver_until_processed(runtime, update) == "relayed"
    assert list(bob.texts()).count("while the server hangs") == 1
    runtime.repository.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize(("code", "labels", "unavailable"), [
    (189, [], True), (91, [], True), (10107, [], True), (2, ["RetryableWriteError"], True),
    (2, [], False), (11000, [], False)])
def test_transient_server_errors_are_storage_unavailable(code: int, labels: list[str],
                                                         unavailable: bool):
    from pymongo.errors import OperationFailure

    from messagine.storage.mongo import _unavailable_as_storage_error
    from messagine.storage.port import StorageUnavailable

    @_unavailable_as_storage_error
    def command() -> None:
        raise OperationFailure("server said no", code, {"errorLabels": labels})

    expected = StorageUnavailable if unavailable else OperationFailure
    with pytest.raises(expected):
        command()


def test_a_user_document_holds_no_scratch_fields_and_the_flood_map_follows_the_rule(
        mongo_uri: str, database: str):
    """The pipeline's temporaries and verdicts are never stored; the counters are the same
    ``flood`` map as on the other backends and agree with ``flood.admit`` at every step."""
    repository = MongoRepository(mongo_uri, database)
    # A document as an earlier version left it: its scratch and f_* fields go.
    repository.db.users.insert_one({"_id": 5, "language": "en", "first_seen": 1.0,
                                    "created_now": False, "f_throttled": True, "f_warn": False,
                                    "f_count": 2})
    rng = random.Random(3)
    state, now = FloodState(), 1_000.0
    for update_id in range(1, 61):
        now += rng.choice([0.05, 0.3, 2.5, 11.0])
        album = rng.choice([None, None, "album-1"])
        state, verdict = admit(state, now, album, FloodRule())
        opened = repository.open_update(update_id, Profile(5, "Eve", None, None, None), "en",
                                        now, album)
        assert (opened.throttled, opened.warn) == (verdict.throttled, verdict.warn)
        doc = repository.db.users.find_one({"_id": 5})
        assert not [key for key in doc if key.startswith(("_", "f_")) and key != "_id"]
        assert not {"created_now", "f_throttled", "f_warn"} & set(doc)
        assert FloodState(**doc["flood"]) == state, f"step {update_id}"
    repository.close()
