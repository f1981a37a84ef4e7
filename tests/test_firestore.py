"""What only the Firestore backend must show: round trips per message, one client per
process, every composite query declared in firestore.indexes.json, and an outage
survived without losing or doubling a message. All against the real emulator."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from conftest import (
    ROOT,
    Clock,
    bot_env,
    firestore_project,
    redeliver_until_processed,
    serve_from_threads,
)
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.domain.flood import FloodRule
from messagine.domain.retention import cutoffs
from messagine.models import EndReason, MessageLink, Periods, Profile, Retention
from messagine.runtime import LazyRuntime, Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.firestore import FirestoreRepository
from messagine.storage.setup_firestore import INDEXES_FILE, gcloud_commands
from support.firestore_emulator import FirestoreEmulator
from support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow
RPCS = ("batch_get_documents", "commit", "run_query", "run_aggregation_query",
        "begin_transaction", "rollback", "batch_write", "list_documents")


class RpcRecorder:
    """Wraps the client's Firestore API: every RPC counted, every query kept."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.queries: list[Any] = []

    def client(self, **kwargs: Any) -> Any:
        made = firestore.Client(**kwargs)
        original_property = type(made)._firestore_api

        recorder = self

        class Recording(type(made)):  # type: ignore[misc]
            @property
            def _firestore_api(self) -> Any:
                api = original_property.fget(self)  # type: ignore[attr-defined]
                if not getattr(api, "_recorded", False):
                    for name in RPCS:
                        setattr(api, name, recorder.wrap(name, getattr(api, name)))
                    api._recorded = True
                return api

        made.__class__ = Recording
        return made

    def wrap(self, name: str, method: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            request = kwargs.get("request") or (args[0] if args else None)
            if name in ("run_query", "run_aggregation_query") and request is not None:
                self.queries.append(request)
            return method(*args, **kwargs)

        return counted


@pytest.fixture
def recorded(firestore_emulator: FirestoreEmulator) -> Iterator[tuple[Any, RpcRecorder]]:
    recorder = RpcRecorder()
    project = firestore_project()
    repository = FirestoreRepository(project, emulator_host=firestore_emulator.host,
                                     client_factory=recorder.client,
                                     flood_rule=FloodRule(limit=10_000))
    yield repository, recorder
    firestore_emulator.reset(project)
    repository.close()


def pair(runtime: Runtime, fake_api: FakeBotApi) -> tuple[FakeUser, FakeUser]:
    alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        runtime.pipeline.process(update)
    return alice, bob


def test_a_relayed_text_costs_five_round_trips(recorded: tuple[Any, RpcRecorder],
                                                fake_api: FakeBotApi, tmp_path: Path):
    repository, recorder = recorded
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "unused.sqlite3"))
    runtime = build_runtime(settings, repository=repository)
    alice, _ = pair(runtime, fake_api)
    for i in range(10):
        recorder.calls.clear()
        fake_api.reset_calls()
        assert runtime.pipeline.process(alice.text(f"text {i}")).outcome == "relayed"
        # open_update: one read and one guarded commit; the copy's chat still lasting: one
        # read; record_message: one commit; finish_update: one commit.
        assert recorder.calls == {"batch_get_documents": 2, "commit": 3}, recorder.calls
        assert [c.method for c in fake_api.calls] == ["copyMessage"]
    recorder.calls.clear()
    runtime.pipeline.process(alice.text("a reply", reply_to=alice.last()["message_id"]))
    assert recorder.calls == {"batch_get_documents": 3, "commit": 3}, "a reply reads one link"


def test_one_client_per_process_across_many_requests(
    fake_api: FakeBotApi, tmp_path: Path, firestore_emulator: FirestoreEmulator,
    monkeypatch: pytest.MonkeyPatch,
):
    created: list[int] = []

    class CountedClient(firestore.Client):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            created.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(firestore, "Client", CountedClient)
    env = {**bot_env(fake_api, tmp_path / "unused.sqlite3"), "STORAGE": "firestore",
           "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
           "GOOGLE_CLOUD_PROJECT": firestore_project()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    lazy = LazyRuntime(require_webhook_secret=True)
    users = [fake_api.user(1000 + i, f"U{i}") for i in range(8)]
    # The runtime is built by the first of the concurrent requests, not here.
    first_use = lambda u: lazy.get().pipeline.process(u)  # noqa: E731, PLW0108
    assert serve_from_threads(first_use, users, 40) == []
    assert len(fake_api.calls_of("sendMessage")) == 320
    assert len(created) == 1
    firestore_emulator.reset(env["GOOGLE_CLOUD_PROJECT"])


# -- every composite query is declared -----------------------------------------------------

def _field(ref: Any) -> str:
    return str(ref.field_path)


def required_index(query: Any) -> tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]:
    """(collection, ordered fields with their mode, equality fields) a query needs.

    Firestore serves a query from single-field indexes when it filters on one field, or
    only by equalities without an order; anything else needs a composite index whose
    equality fields come first (in any order) and then the range and order fields.
    """
    structured = (query["structured_query"] if query.get("structured_query") is not None
                  else query["structured_aggregation_query"].structured_query)
    collection = structured.from_[0].collection_id
    filters = []
    where = structured.where
    stack = [where] if where else []
    while stack:
        current = stack.pop()
        if current.composite_filter and current.composite_filter.filters:
            stack.extend(current.composite_filter.filters)
        elif current.field_filter and current.field_filter.field.field_path:
            op = current.field_filter.op.name
            filters.append((_field(current.field_filter.field), op))
        elif current.unary_filter and current.unary_filter.field.field_path:
            op = current.unary_filter.op.name
            filters.append((_field(current.unary_filter.field), op))
    equalities = [(f, op) for f, op in filters if op in ("EQUAL", "IS_NULL", "ARRAY_CONTAINS")]
    ranges = [f for f, op in filters if (f, op) not in equalities]
    orders = [(_field(o.field), o.direction.name) for o in structured.order_by
              if _field(o.field) != "__name__"]
    ordered = [n for n, _ in orders]
    tail = [(name, "ASCENDING") for name in ranges if name not in ordered] + orders
    distinct = {f for f, _ in equalities} | {n for n, _ in tail}
    if len(distinct) <= 1 or not tail:
        return collection, (), ()
    mode = {f: ("CONTAINS" if op == "ARRAY_CONTAINS" else "ASCENDING") for f, op in equalities}
    return collection, tuple(tail), tuple(sorted(f"{f}:{mode[f]}" for f, _ in equalities))


def declared() -> set[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]]]:
    indexes = json.loads(INDEXES_FILE.read_text())["indexes"]
    found = set()
    for index in indexes:
        fields = [(f["fieldPath"], f.get("order") or "CONTAINS") for f in index["fields"]]
        for split in range(len(fields) + 1):
            head, tail = fields[:split], fields[split:]
            if all(mode != "CONTAINS" for _, mode in tail):
                found.add((index["collectionGroup"], tuple(tail),
                           tuple(sorted(f"{f}:{m}" for f, m in head))))
    return found


def test_every_composite_query_is_in_the_indexes_file(recorded: tuple[Any, RpcRecorder]):
    repository, recorder = recorded
    now = 1_790_000_000.0
    for user_id in (1, 2, 3):
        repository.open_update(user_id, Profile(user_id, "U", None, None, "en"), "en", now)
    for user_id in (1, 2, 3):
        repository.find_partner(user_id, 5, now, 100 + user_id)
    state = repository.get_user(1)
    assert state is not None and state.chat is not None
    repository.record_message(MessageLink(state.chat.chat_id, 1, 5, 2, 6, "text", now))
    repository.recent_messages(state.chat.chat_id, 1, 10)
    repository.count_messages(state.chat.chat_id)
    repository.exclude_pair(1, 3, "block", now)
    repository.end_chat(1, EndReason.EXIT, now, 200)
    repository.end_chat(1, EndReason.EXIT, now, 200)
    repository.release_update(101)
    repository.last_chat(1)
    repository.counts(1)
    repository.moderation_stats(now - 86_400)
    repository.claim_nudges(now + 100, now + 100, 10)
    repository.count_idle_excluded(now + 100)
    repository.claim_language_offers(now + 100, 10)
    repository.expire_lobby(now + 100, 10)
    repository.add_report(2, 1, state.chat.chat_id, "spam", now)
    repository.export_user(1)
    repository.purge_expired(now + 400 * 86_400, Retention(86_400, 86_400), 10)
    cut = cutoffs(now + 400 * 86_400, Periods())
    repository.idle_chats(cut, 10)
    repository.claim_inactivity_notices(cut, now + 400 * 86_400, 10)
    repository.inactive_accounts(cut, 10)
    repository.delete_user(2)
    needed = {required_index(query) for query in recorder.queries}
    composite = {need for need in needed if need[1]}
    assert len(composite) >= 6, "the workload above runs the composite queries"
    missing = composite - declared()
    assert not missing, f"queries without a declared composite index: {missing}"


def test_the_indexes_deploy_with_gcloud():
    commands = gcloud_commands("my-project")
    indexes = json.loads(INDEXES_FILE.read_text())["indexes"]
    creates = [c for c in commands if " indexes composite create " in c]
    assert len(creates) == len(indexes)
    assert ("gcloud firestore indexes composite create --project=my-project "
            "--collection-group=lobby --query-scope=COLLECTION "
            "--field-config=field-path=language,order=ascending "
            "--field-config=field-path=since,order=ascending --async") in commands
    ttls = [c for c in commands if " fields ttls update expires_at " in c]
    assert {c.split("--collection-group=")[1].split()[0] for c in ttls} == \
        {"links", "chats", "claims", "albums"}
    docs = (ROOT / "docs" / "storage.md").read_text()
    assert "python -m messagine.storage.setup_firestore" in docs


# -- the store goes away ------------------------------------------------------------------

@pytest.fixture
def behind_proxy(fake_api: FakeBotApi, tmp_path: Path, firestore_emulator: FirestoreEmulator
                 ) -> Iterator[tuple[TcpProxy, Runtime, FakeUser, FakeUser]]:
    """The bot on the emulator through a proxy the test can cut, Alice and Bob paired."""
    proxy = TcpProxy(firestore_emulator.host)
    project = firestore_project()
    repository = FirestoreRepository(project, emulator_host=proxy.host,
                                     flood_rule=FloodRule(limit=10_000))
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "unused.sqlite3"))
    runtime = build_runtime(settings, repository=repository, clock=Clock())
    alice, bob = pair(runtime, fake_api)
    yield proxy, runtime, alice, bob
    proxy.cut()
    firestore_emulator.reset(project)
    repository.close()


def test_an_outage_answers_503_and_loses_or_doubles_nothing(
    behind_proxy: tuple[TcpProxy, Runtime, FakeUser, FakeUser],
    caplog: pytest.LogCaptureFixture,
):
    proxy, runtime, alice, bob = behind_proxy
    before = alice.text("sent before the outage")
    assert runtime.pipeline.process(before).outcome == "relayed"

    proxy.cut()
    during = alice.text("sent during the outage")
    started = time.monotonic()
    result = runtime.pipeline.process(during)
    assert (result.status, result.outcome) == (503, "retry:storage")
    assert time.monotonic() - started < 15, "the answer comes well inside Telegram's 60 s"
    assert "sent during the outage" not in list(bob.texts())
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(lines) == 1 and "storage unavailable (firestore:" in lines[0], lines
    assert all(r.exc_info is None for r in caplog.records), "a line, not a traceback"

    proxy.restore()
    assert redeliver_until_processed(runtime, during) == "relayed"
    assert runtime.pipeline.process(during).outcome == "duplicate"
    assert runtime.pipeline.process(before).outcome == "duplicate"
    texts = list(bob.texts())
    assert texts.count("sent before the outage") == 1
    assert texts.count("sent during the outage") == 1


def test_a_hanging_store_is_cut_off_by_the_call_deadline(
    behind_proxy: tuple[TcpProxy, Runtime, FakeUser, FakeUser],
):
    proxy, runtime, alice, bob = behind_proxy
    proxy.hang()  # connections stay open; nothing comes back
    update = alice.text("while the store hangs")
    started = time.monotonic()
    result = runtime.pipeline.process(update)
    elapsed = time.monotonic() - started
    assert (result.status, result.outcome) == (503, "retry:storage")
    # One call's 5 s deadline for the claim, one for the release attempt: well under
    # Telegram's 60 s.
    assert elapsed < 15, elapsed
    proxy.restore()
    assert redeliver_until_processed(runtime, update) == "relayed"
    assert list(bob.texts()).count("while the store hangs") == 1


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="the gcloud CLI is not installed")
def test_gcloud_accepts_the_setup_commands_and_fails_only_for_lack_of_an_account(
        tmp_path: Path):
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
           "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    commands = gcloud_commands("demo-project")
    array_index = next(c for c in commands if "array-config=contains" in c)
    ttl = next(c for c in commands if " ttls update " in c)
    for command in (commands[0], array_index, ttl):
        result = subprocess.run(shlex.split(command), env=env, capture_output=True, text=True,
                                timeout=120, check=False)
        assert result.returncode != 0
        assert "You do not currently have an active account selected" in result.stderr, \
            (command, result.stderr)


def test_a_claim_batch_cut_short_by_the_store_returns_what_it_claimed(
        firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch):
    """The third claim of a batch of inactivity notices fails (the service unavailable):
    the two claimed are returned (to be told, or given back), not left claimed and untold."""
    from google.api_core import exceptions as gexc

    from messagine.storage import firestore as firestore_adapter

    project = firestore_project()
    repository = FirestoreRepository(project, emulator_host=firestore_emulator.host)
    now = 1_790_000_000.0
    for user_id in (1, 2, 3):
        repository.open_update(user_id, Profile(user_id, f"U{user_id}", None, None, None), "en",
                               now)
    real, calls = firestore_adapter.commit_unless_beaten, []

    def third_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise gexc.ServiceUnavailable("test: the store went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(firestore_adapter, "commit_unless_beaten", third_fails)
    cut = cutoffs(now + 400 * 86_400, Periods())
    claimed = repository.claim_inactivity_notices(cut, now + 400 * 86_400, 10)
    assert len(claimed) == 2
    assert [u for u, _ in repository.claim_inactivity_notices(cut, now + 400 * 86_400, 10)] \
        == [u for u in (1, 2, 3) if u not in {c for c, _ in claimed}]
    firestore_emulator.reset(project)
