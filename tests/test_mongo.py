"""What only the MongoDB backend must show: commands per message, one client per process,
indexed queries, and an outage survived without losing or doubling a message."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
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
from messagine.models import EndReason, MatchOutcome, Profile
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


# -- pairing without transactions: a step that stops half way never leaves a one-sided chat

T0 = 1_790_000_000.0


def _registered(mongo_uri: str, database: str, users: int) -> MongoRepository:
    repository = MongoRepository(mongo_uri, database)
    for user_id in range(1, users + 1):
        repository.open_update(user_id, Profile(user_id, f"U{user_id}", None, None, None),
                               "en", T0)
    return repository


def _assert_chats_agree(repository: MongoRepository, users: int) -> None:
    """Whoever names a partner is named back, in the same chat, and it is not ended."""
    states = {u: repository.get_user(u) for u in range(1, users + 1)}
    for user_id, state in states.items():
        assert state is not None
        if state.chat is not None:
            partner = states[state.chat.partner_id]
            assert partner is not None and partner.chat is not None, f"{user_id}: one-sided"
            assert (partner.chat.partner_id, partner.chat.chat_id) == (
                user_id, state.chat.chat_id)
    in_chats = sum(1 for s in states.values() if s is not None and s.chat is not None)
    assert repository.counts(1).active_chats * 2 == in_chats


def _leave_intent(repository: MongoRepository, intent: dict[str, Any]) -> None:
    """The "en" pool's lock as an instance that died after writing its intent leaves it."""
    repository.db.locks.update_one({"_id": "lobby:en"}, {"$set": {
        "holder": "dead", "until": 0.0, "intent": intent}}, upsert=True)


def _intent(searcher: int, partner: int, chat_id: int) -> dict[str, Any]:
    return {"searcher": searcher, "partner": partner, "chat_id": chat_id, "language": "en",
            "language_of_searcher": "en", "partner_language": "en", "started_at": T0,
            "update_id": 500 + searcher}


def test_a_pairing_rolled_forward_after_its_partner_was_taken_is_undone(
        mongo_uri: str, database: str):
    """An instance stalled past its lease (or died) after pairing 3 with the waiting 2;
    meanwhile 1 took 2. Rolling the intent forward takes 3, then finds 2 taken: it is
    undone, and 3 is given back waiting (else 4, who rolls it forward, could not be paired
    with 3: a partner must be waiting)."""
    repository = _registered(mongo_uri, database, 4)
    assert repository.find_partner(1, 5, T0, 101).outcome is MatchOutcome.WAITING
    assert repository.find_partner(2, 5, T0, 102).outcome is MatchOutcome.MATCHED  # 2 and 1
    assert repository.find_partner(3, 5, T0, 103).outcome is MatchOutcome.WAITING
    _leave_intent(repository, _intent(3, 2, 77))  # 3 with 2, decided before 2 was taken
    assert repository.find_partner(4, 5, T0, 104).outcome is MatchOutcome.MATCHED  # rolls it
    _assert_chats_agree(repository, 4)
    assert repository.db.chats.find_one({"_id": 77}) is None
    assert repository.db.locks.find_one({"_id": "lobby:en"}).get("intent") is None
    three = repository.get_user(3)
    assert three is not None and three.chat is not None and three.chat.partner_id == 4
    repository.close()


def test_an_undone_pairing_gives_the_waiting_side_back_to_the_lobby(
        mongo_uri: str, database: str):
    """The intent's searcher (2) was taken by another pairing first: it is undone before
    it touches its partner (4), who still waits, and the next searcher (1) finds them.
    (The give-back of a side already taken is the test above: 3 waits again.)"""
    repository = _registered(mongo_uri, database, 4)
    repository.find_partner(3, 5, T0, 103)  # 3 waits
    repository.find_partner(1, 5, T0 + 1, 101)  # 1 and 3
    repository.end_chat(1, EndReason.EXIT, T0 + 2, 201)
    repository.find_partner(3, 5, T0 + 3, 104)  # 3 waits again, since T0 + 3
    repository.find_partner(2, 0, T0 + 4, 105)  # 2 and 3: now 2 is taken
    repository.find_partner(4, 5, T0 + 5, 106)  # 4 waits
    _leave_intent(repository, _intent(2, 4, 78))  # 2 with 4, decided before 2 was taken
    assert repository.find_partner(1, 0, T0 + 6, 107).outcome is MatchOutcome.MATCHED
    _assert_chats_agree(repository, 4)
    one = repository.get_user(1)
    assert one is not None and one.chat is not None and one.chat.partner_id == 4
    repository.close()


def test_a_stale_intent_does_not_reopen_an_ended_chat(mongo_uri: str, database: str):
    """An intent the lock kept (clearing it failed) whose chat has since ended is left
    alone by the next holder: the two stay apart."""
    repository = _registered(mongo_uri, database, 3)
    repository.find_partner(1, 5, T0, 101)
    matched = repository.find_partner(2, 5, T0, 102)
    assert matched.chat is not None
    ended = repository.end_chat(1, EndReason.EXIT, T0 + 1, 201)
    assert ended is not None and ended.chat_id == matched.chat.chat_id
    _leave_intent(repository, _intent(2, 1, matched.chat.chat_id))
    assert repository.find_partner(3, 5, T0 + 2, 103).outcome is MatchOutcome.WAITING
    _assert_chats_agree(repository, 3)
    assert all(repository.get_user(u).chat is None for u in (1, 2))  # type: ignore[union-attr]
    repository.close()


def test_a_lease_lost_before_the_intent_is_written_answers_503(mongo_uri: str, database: str):
    """A holder that stalled past its lease while another took it writes nothing: what it
    read may be stale, so the search answers 503 and Telegram re-delivers it."""
    from messagine.storage.port import StorageUnavailable

    repository = _registered(mongo_uri, database, 2)
    repository.find_partner(1, 5, T0, 101)
    with pytest.raises(StorageUnavailable), repository._pool_lock("en") as lock:
        repository.db.locks.update_one({"_id": "lobby:en"}, {"$set": {"holder": "another"}})
        lock.record_intent(_intent(2, 1, 79))
    assert repository.db.chats.find_one({"_id": 79}) is None
    assert repository.find_partner(2, 5, T0, 102).outcome is MatchOutcome.MATCHED
    _assert_chats_agree(repository, 2)
    repository.close()


def test_a_redelivered_end_clears_the_partner_the_first_attempt_left(
        mongo_uri: str, database: str):
    """The first attempt ended the chat and cleared its sender, then failed before the
    partner: the re-delivered update (same id) clears the partner too."""
    repository = _registered(mongo_uri, database, 2)
    repository.find_partner(1, 5, T0, 101)
    chat = repository.find_partner(2, 5, T0, 102).chat
    assert chat is not None
    assert repository.end_chat(1, EndReason.EXIT, T0 + 1, 201) is not None
    repository.db.users.update_one({"_id": 2}, {"$set": {"chat": {
        "id": chat.chat_id, "partner": 1, "partner_language": "en", "started_at": T0}}})
    again = repository.end_chat(1, EndReason.EXIT, T0 + 2, 201)
    assert again is not None and again.resumed
    _assert_chats_agree(repository, 2)
    two = repository.get_user(2)
    assert two is not None and two.chat is None
    repository.close()


def _fail_once(repository: MongoRepository, command: str, collection: str) -> None:
    """The server fails the next ``command`` on ``collection`` (MongoDB's failCommand
    fail point; 112, a write conflict: transient, and not retried by pymongo itself)."""
    repository.db.client.admin.command("configureFailPoint", "failCommand", mode={"times": 1},
                                       data={"failCommands": [command], "errorCode": 112,
                                             "namespace": f"{repository.db.name}.{collection}"})


@pytest.mark.parametrize(("command", "collection"), [("update", "users"), ("delete", "lobby")])
def test_a_lobby_timeout_that_failed_half_way_is_finished_by_the_next_run(
        mongo_uri: str, database: str, command: str, collection: str):
    """Either write of expiring a wait may fail; the next run still expires it, and the
    user is left neither waiting without an entry nor with an entry and not waiting."""
    from messagine.storage.port import StorageUnavailable

    repository = _registered(mongo_uri, database, 2)
    repository.find_partner(1, 5, T0, 101)
    _fail_once(repository, command, collection)
    with pytest.raises(StorageUnavailable):
        repository.expire_lobby(T0 + 60, 10)
    assert repository.expire_lobby(T0 + 60, 10) == [(1, "en")]
    one = repository.get_user(1)
    assert one is not None and not one.waiting
    assert repository.counts(1).waiting == 0
    repository.close()


class _FailAfter(monitoring.CommandListener):
    """Arms the fail point once ``after`` commands named ``command`` have succeeded."""

    def __init__(self, arm: Callable[[], None], command: str, after: int) -> None:
        self.arm, self.command, self.left = arm, command, after

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == self.command:
            self.left -= 1
            if self.left == 0:
                self.arm()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_a_claim_batch_cut_short_by_the_store_returns_what_it_claimed(
        mongo_uri: str, database: str):
    """The third claim of a batch of inactivity notices fails: the two claimed are
    returned (to be told, or given back), not left claimed and untold."""
    from messagine.domain.retention import Cutoffs

    _registered(mongo_uri, database, 3).close()
    admin: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_uri)
    listener = _FailAfter(lambda: admin.admin.command(
        "configureFailPoint", "failCommand", mode={"times": 1},
        data={"failCommands": ["findAndModify"], "errorCode": 112,
              "namespace": f"{database}.users"}), "findAndModify", 2)
    repository = MongoRepository(mongo_uri, database, client_factory=lambda *a, **k: (
        pymongo.MongoClient(*a, event_listeners=[listener], **k)))
    cut = Cutoffs(active_before=T0 + 1, notice_seen_before=T0 + 1, noticed_before=T0,
                  erase_seen_before=T0)
    claimed = repository.claim_inactivity_notices(cut, T0 + 2, 10)
    assert len(claimed) == 2
    assert [u for u, _ in repository.claim_inactivity_notices(cut, T0 + 2, 10)] == [
        u for u in (1, 2, 3) if u not in {c for c, _ in claimed}]
    admin.close()
    repository.close()


def test_an_intent_whose_partner_stopped_waiting_pairs_nobody(mongo_uri: str, database: str):
    """An intent left in the lock (its pairing undone, or its writer dead before the chat
    was written) chose user 2 from the lobby; 2 has stopped waiting since. Rolling it
    forward must not put 2 in a chat they did not ask for."""
    repository = _registered(mongo_uri, database, 4)
    repository.find_partner(2, 5, T0, 102)
    assert repository.leave_lobby(2)
    _leave_intent(repository, _intent(3, 2, 80))
    assert repository.find_partner(4, 5, T0 + 1, 104).outcome is MatchOutcome.WAITING
    _assert_chats_agree(repository, 4)
    assert all(repository.get_user(u).chat is None for u in (2, 3))  # type: ignore[union-attr]
    assert repository.db.chats.find_one({"_id": 80}) is None
    repository.close()


def test_a_lobby_entry_a_cut_short_timeout_left_does_not_block_the_pool(
        mongo_uri: str, database: str):
    """A lobby timeout cleared user 1's waiting time and failed to delete the entry. The
    next search that chooses the entry answers 503 once and drops it; its re-delivery
    (Telegram's) waits in the lobby like any search, and 1 is not paired."""
    from messagine.storage.port import StorageUnavailable

    repository = _registered(mongo_uri, database, 2)
    repository.find_partner(1, 5, T0, 101)
    _fail_once(repository, "delete", "lobby")
    with pytest.raises(StorageUnavailable):
        repository.expire_lobby(T0 + 60, 10)
    with pytest.raises(StorageUnavailable):
        repository.find_partner(2, 5, T0 + 61, 102)
    assert repository.find_partner(2, 5, T0 + 61, 102).outcome is MatchOutcome.WAITING
    one = repository.get_user(1)
    assert one is not None and one.chat is None and not one.waiting
    assert repository.db.lobby.find_one({"_id": 1}) is None
    _assert_chats_agree(repository, 2)
    repository.close()


def test_a_lobby_entry_an_erasure_cut_short_left_does_not_block_the_pool(
        mongo_uri: str, database: str):
    """User 1's erasure took their document and failed before their lobby entry. The
    search that chooses the entry answers 503 once and drops it; its re-delivery waits."""
    from messagine.storage.port import StorageUnavailable

    repository = _registered(mongo_uri, database, 2)
    repository.find_partner(1, 5, T0, 101)
    _fail_once(repository, "delete", "lobby")
    with pytest.raises(StorageUnavailable):
        repository.delete_user(1)
    assert repository.get_user(1) is None
    with pytest.raises(StorageUnavailable):
        repository.find_partner(2, 5, T0 + 1, 102)
    assert repository.find_partner(2, 5, T0 + 1, 102).outcome is MatchOutcome.WAITING
    assert repository.db.lobby.find_one({"_id": 1}) is None
    assert repository.unfinished_erasures(10) == [1]
    repository.close()


@pytest.mark.parametrize("profile_erased", [False, True])
def test_finishing_an_erasure_tells_a_return_from_a_profile_never_erased(
        mongo_uri: str, database: str, profile_erased: bool):
    """The journal says whether the erasure had taken the profile. If not (it died right
    after writing its journal entry), the profile there is the one to erase; if it had, a
    profile there is a user who came back, and stays."""
    repository = _registered(mongo_uri, database, 1)
    repository.db.erasures.insert_one({"_id": 1, "user_id": 1,
                                       "profile_erased": profile_erased})
    assert repository.unfinished_erasures(10) == [1]
    repository.finish_erasure(1)
    assert (repository.get_user(1) is not None) is profile_erased
    assert repository.unfinished_erasures(10) == []
    repository.close()
