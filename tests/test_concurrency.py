"""Matching and ending chats from several OS processes on one SQLite file at once.

These are the invariants the earlier bot broke under races: nobody in two chats, nobody
waiting and chatting at once, nobody waiting while a compatible user waits, one chat per
pair, and a chat that both sides end at once is ended once.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from messagine.models import EndReason, MatchOutcome, Profile
from messagine.storage.sqlite import SqliteRepository

PROCESSES = 4
USERS = 200
T0 = 1_790_000_000.0

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


Spec = tuple[str, str, str]
"""(backend, SQLite path, MongoDB URI or emulator host, database or project): what a
worker process opens."""


def _repo(spec: Spec) -> Any:
    backend, where, database = spec
    if backend == "sqlite":
        return SqliteRepository(where, busy_timeout_s=30)
    if backend == "firestore":
        from messagine.storage.firestore import FirestoreRepository

        return FirestoreRepository(database, emulator_host=where)
    from messagine.storage.mongo import MongoRepository

    return MongoRepository(where, database)


@pytest.fixture(params=["sqlite", "mongo", "firestore"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Spec]:
    if request.param == "sqlite":
        yield ("sqlite", str(tmp_path / "race.sqlite3"), "")
        return
    from conftest import firestore_project, mongo_database_name

    if request.param == "firestore":
        emulator = request.getfixturevalue("firestore_emulator")
        project = firestore_project()
        yield ("firestore", emulator.host, project)
        emulator.reset(project)
        return

    uri = request.getfixturevalue("mongo_uri")
    name = mongo_database_name()
    yield ("mongo", uri, name)
    with opened(("mongo", uri, name)) as repo:
        repo.db.client.drop_database(name)


@contextlib.contextmanager
def opened(spec: Spec) -> Iterator[Any]:
    repo = _repo(spec)
    try:
        yield repo
    finally:
        repo.close()


def _register_all(spec: Spec, languages: list[str]) -> None:
    with opened(spec) as repo:
        for user_id in range(1, USERS + 1):
            repo.open_update(user_id, Profile(user_id, f"U{user_id}", None, None, None),
                             languages[user_id - 1], T0)


def _owned(worker: int) -> list[int]:
    return [u for u in range(1, USERS + 1) if u % PROCESSES == worker]


def _search_all(spec: Spec, worker: int, start: Any, out: Any) -> None:
    repo = _repo(spec)
    users = _owned(worker)
    start.wait()
    results = [(u, repo.find_partner(u, 5, time.time(), 10_000 + u)) for u in users]
    out.put([(u, r.outcome.value, r.chat.chat_id if r.chat else None, r.resumed)
             for u, r in results])


def _end_all(spec: Spec, worker: int, start: Any, out: Any) -> None:
    repo = _repo(spec)
    start.wait()
    ended = []
    for user_id in _owned(worker):
        result = repo.end_chat(user_id, EndReason.EXIT, time.time(), 20_000 + user_id)
        if result is not None:
            ended.append((user_id, result.chat_id))
    out.put(ended)


def _churn(spec: Spec, worker: int, start: Any, out: Any, operations: int) -> None:
    repo = _repo(spec)
    rng = random.Random(worker)
    users = _owned(worker)
    update_id = 100_000 * (worker + 1)
    violations: list[str] = []
    matched: list[int] = []
    start.wait()
    for _ in range(operations):
        user_id = rng.choice(users)
        update_id += 1
        state = _as_telegram_retries(lambda u=user_id: repo.get_user(u))
        assert state is not None
        if state.chat is not None and state.waiting:
            violations.append(f"user {user_id} waits and chats at once")
        roll = rng.random()
        if roll < 0.6:
            result = _as_telegram_retries(
                lambda u=user_id, n=update_id: repo.find_partner(u, 2, time.time(), n))
            if result.outcome is MatchOutcome.MATCHED and result.chat is not None:
                matched.append(result.chat.chat_id)
        elif roll < 0.9:
            _as_telegram_retries(lambda u=user_id, n=update_id: repo.end_chat(
                u, EndReason.NEXT, time.time(), n))
        else:
            _as_telegram_retries(lambda u=user_id: repo.leave_lobby(u))
    out.put((violations, matched))


def _as_telegram_retries(operation: Any, attempts: int = 20) -> Any:
    """The operation, tried again after ``StorageUnavailable`` as a 503 makes Telegram do.

    MongoDB's pool lease answers a search that waited over 8 s for its language's lock
    that way (on mongoeco, an emulation at ~10 ms a write, four processes reach it); the
    same update, with its id, comes again and must resume what the first attempt began.
    mongoeco keeps its data in SQLite and, with four writers, sometimes answers "database
    is locked", which no MongoDB server says: an error no adapter knows, which the
    pipeline answers 503 too.
    """
    from pymongo.errors import OperationFailure

    from messagine.storage.port import StorageUnavailable

    for attempt in range(attempts):
        try:
            return operation()
        except (StorageUnavailable, OperationFailure) as error:
            emulator_lock = "database is locked" in str(error)
            if attempt == attempts - 1 or not (
                    isinstance(error, StorageUnavailable) or emulator_lock):
                raise
            time.sleep(0.2)
    return None


class _Failed:
    """A worker's exception, as its traceback: the test shows it instead of a timeout."""

    def __init__(self, trace: str) -> None:
        self.trace = trace


def _reporting(target: Any, spec: Spec, worker: int, start: Any, out: Any, *extra: Any) -> None:
    try:
        target(spec, worker, start, out, *extra)
    except BaseException:
        import traceback

        out.put(_Failed(traceback.format_exc()))
        raise


def _run(target: Any, spec: Spec, *extra: Any) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    out = context.Queue()
    workers = [context.Process(target=_reporting, args=(target, spec, w, start, out, *extra))
               for w in range(PROCESSES)]
    for process in workers:
        process.start()
    time.sleep(0.5)  # let every process import and open the database before the start
    start.set()
    results = [out.get(timeout=300) for _ in workers]
    failed = [r.trace for r in results if isinstance(r, _Failed)]
    assert not failed, "a worker failed:\n" + "\n".join(failed)
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    return results


def _check_final_state(spec: Spec, recent: int) -> None:
    """Every user's state, read through the port, satisfies the invariants."""
    with opened(spec) as repo:
        _check_states(repo, recent)


def _check_states(repo: Any, recent: int) -> None:
    states = {u: repo.get_user(u) for u in range(1, USERS + 1)}
    for user_id, state in states.items():
        assert state is not None
        assert not (state.chat is not None and state.waiting), f"{user_id} waits and chats"
        if state.chat is not None:
            partner = states[state.chat.partner_id]
            assert partner is not None and partner.chat is not None
            assert partner.chat.partner_id == user_id
            assert partner.chat.chat_id == state.chat.chat_id
    counts = repo.counts(1)
    in_chats = sum(1 for s in states.values() if s is not None and s.chat is not None)
    assert counts.active_chats * 2 == in_chats
    waiting = [u for u, s in states.items() if s is not None and s.waiting]
    assert counts.waiting == len(waiting)
    # Nobody waits while a compatible user also waits: a search by any waiting user
    # (with a fresh update id) finds nobody.
    for user_id in waiting:
        result = repo.find_partner(user_id, recent, time.time(), 9_000_000 + user_id)
        assert result.outcome is MatchOutcome.ALREADY_WAITING, \
            f"user {user_id} waits although a compatible user waits too"


def test_200_users_searching_at_once_form_exactly_100_pairs(spec: Spec):
    _register_all(spec, ["en"] * USERS)
    outcomes = [item for batch in _run(_search_all, spec) for item in batch]
    counts = Counter(outcome for _, outcome, _, _ in outcomes)
    assert counts == {"matched": 100, "waiting": 100}
    chat_ids = [chat for _, outcome, chat, _ in outcomes if outcome == "matched"]
    assert len(set(chat_ids)) == 100, "each pair was made once"
    with opened(spec) as repo:
        assert repo.counts(1).waiting == 0 and repo.counts(1).active_chats == 100
        _check_states(repo, 5)
        ended = [item for batch in _run(_end_all, spec) for item in batch]
        assert len(ended) == 100, "both sides ending at once end each chat exactly once"
        assert len({chat for _, chat in ended}) == 100
        assert repo.counts(1).active_chats == 0 and repo.counts(1).previous_chats == 100


def test_two_languages_pair_within_their_pools(spec: Spec):
    languages = ["en" if user % 3 else "de" for user in range(1, USERS)] + ["de"]
    _register_all(spec, languages)
    outcomes = [item for batch in _run(_search_all, spec) for item in batch]
    with opened(spec) as repo:
        for user_id, outcome, _, _ in outcomes:
            state = repo.get_user(user_id)
            assert state is not None
            if outcome == "matched":
                assert state.chat is not None
                partner = repo.get_user(state.chat.partner_id)
                assert partner is not None and partner.language == state.language
        pools = Counter(languages)
        assert repo.counts(1).waiting == pools["en"] % 2 + pools["de"] % 2
        _check_states(repo, 5)


def test_random_churn_keeps_every_invariant(spec: Spec):
    _register_all(spec, ["en" if user % 4 else "es" for user in range(1, USERS + 1)])
    results = _run(_churn, spec, 400 if spec[0] == "sqlite" else 100)
    violations = [v for batch, _ in results for v in batch]
    assert violations == []
    matched = [chat for _, batch in results for chat in batch]
    assert len(matched) == len(set(matched)), "a chat was reported as made twice"
    _check_final_state(spec, 2)
