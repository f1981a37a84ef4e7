"""Matching and ending chats from several OS processes on one SQLite file at once.

These are the invariants the earlier bot broke under races: nobody in two chats, nobody
waiting and chatting at once, nobody waiting while a compatible user waits, one chat per
pair, and a chat that both sides end at once is ended once.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from messagine.models import EndReason, MatchOutcome, Profile
from messagine.storage.sqlite import SqliteRepository

PROCESSES = 4
USERS = 200
T0 = 1_790_000_000.0

pytestmark = pytest.mark.slow


def _repo(path: str) -> SqliteRepository:
    return SqliteRepository(path, busy_timeout_s=30)


def _register_all(path: str, languages: list[str]) -> None:
    repo = _repo(path)
    for user_id in range(1, USERS + 1):
        repo.open_update(user_id, Profile(user_id, f"U{user_id}", None, None, None),
                         languages[user_id - 1], T0)


def _owned(worker: int) -> list[int]:
    return [u for u in range(1, USERS + 1) if u % PROCESSES == worker]


def _search_all(path: str, worker: int, start: Any, out: Any) -> None:
    repo = _repo(path)
    users = _owned(worker)
    start.wait()
    results = [(u, repo.find_partner(u, 5, time.time(), 10_000 + u)) for u in users]
    out.put([(u, r.outcome.value, r.chat.chat_id if r.chat else None, r.resumed)
             for u, r in results])


def _end_all(path: str, worker: int, start: Any, out: Any) -> None:
    repo = _repo(path)
    start.wait()
    ended = []
    for user_id in _owned(worker):
        result = repo.end_chat(user_id, EndReason.EXIT, time.time(), 20_000 + user_id)
        if result is not None:
            ended.append((user_id, result.chat_id))
    out.put(ended)


def _churn(path: str, worker: int, start: Any, out: Any, operations: int) -> None:
    repo = _repo(path)
    rng = random.Random(worker)
    users = _owned(worker)
    update_id = 100_000 * (worker + 1)
    violations: list[str] = []
    matched: list[int] = []
    start.wait()
    for _ in range(operations):
        user_id = rng.choice(users)
        update_id += 1
        state = repo.get_user(user_id)
        assert state is not None
        if state.chat is not None and state.waiting:
            violations.append(f"user {user_id} waits and chats at once")
        roll = rng.random()
        if roll < 0.6:
            result = repo.find_partner(user_id, 2, time.time(), update_id)
            if result.outcome is MatchOutcome.MATCHED and result.chat is not None:
                matched.append(result.chat.chat_id)
        elif roll < 0.9:
            repo.end_chat(user_id, EndReason.NEXT, time.time(), update_id)
        else:
            repo.leave_lobby(user_id)
    out.put((violations, matched))


def _run(target: Any, path: Path, *extra: Any) -> list[Any]:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    out = context.Queue()
    workers = [context.Process(target=target, args=(str(path), w, start, out, *extra))
               for w in range(PROCESSES)]
    for process in workers:
        process.start()
    time.sleep(0.5)  # let every process import and open the database before the start
    start.set()
    results = [out.get(timeout=120) for _ in workers]
    for process in workers:
        process.join(30)
        assert process.exitcode == 0
    return results


def _check_final_state(path: Path, recent: int) -> None:
    repo = _repo(str(path))
    conn = repo._connection()  # the test reads the tables directly to check invariants
    members = dict(conn.execute("SELECT user_id, chat_id FROM memberships").fetchall())
    active = conn.execute("SELECT id, user_a, user_b FROM chats WHERE ended_at IS NULL").fetchall()
    assert len(members) == 2 * len(active)
    for chat_id, user_a, user_b in active:
        assert members[user_a] == chat_id and members[user_b] == chat_id
    waiting = [row[0] for row in conn.execute("SELECT user_id FROM lobby ORDER BY since")]
    assert not set(waiting) & set(members), "a user waits and chats at once"
    # Nobody waits while a compatible user also waits.
    for i, first in enumerate(waiting):
        for second in waiting[i + 1:]:
            state_a, state_b = repo.get_user(first), repo.get_user(second)
            assert state_a is not None and state_b is not None
            if state_a.language != state_b.language:
                continue
            recent_a = _recent(conn, first, recent)
            recent_b = _recent(conn, second, recent)
            assert second in recent_a or first in recent_b, \
                f"users {first} and {second} both wait but could chat"


def _recent(conn: Any, user_id: int, limit: int) -> set[int]:
    rows = conn.execute(
        "SELECT CASE WHEN user_a = ? THEN user_b ELSE user_a END FROM chats"
        " WHERE user_a = ? OR user_b = ? ORDER BY started_at DESC, id DESC LIMIT ?",
        (user_id, user_id, user_id, limit)).fetchall()
    return {row[0] for row in rows}


def test_200_users_searching_at_once_form_exactly_100_pairs(tmp_path: Path):
    path = tmp_path / "race.sqlite3"
    _register_all(str(path), ["en"] * USERS)
    outcomes = [item for batch in _run(_search_all, path) for item in batch]
    counts = Counter(outcome for _, outcome, _, _ in outcomes)
    assert counts == {"matched": 100, "waiting": 100}
    chat_ids = [chat for _, outcome, chat, _ in outcomes if outcome == "matched"]
    assert len(set(chat_ids)) == 100, "each pair was made once"
    repo = _repo(str(path))
    assert repo.counts(1).waiting == 0 and repo.counts(1).active_chats == 100
    _check_final_state(path, 5)

    ended = [item for batch in _run(_end_all, path) for item in batch]
    assert len(ended) == 100, "both sides ending at once end each chat exactly once"
    assert len({chat for _, chat in ended}) == 100
    assert repo.counts(1).active_chats == 0 and repo.counts(1).previous_chats == 100


def test_two_languages_pair_within_their_pools(tmp_path: Path):
    path = tmp_path / "pools.sqlite3"
    languages = ["en" if user % 3 else "de" for user in range(1, USERS)] + ["de"]
    _register_all(str(path), languages)
    outcomes = [item for batch in _run(_search_all, path) for item in batch]
    repo = _repo(str(path))
    for user_id, outcome, _, _ in outcomes:
        state = repo.get_user(user_id)
        assert state is not None
        if outcome == "matched":
            assert state.chat is not None
            partner = repo.get_user(state.chat.partner_id)
            assert partner is not None and partner.language == state.language
    pools = Counter(languages)
    assert repo.counts(1).waiting == pools["en"] % 2 + pools["de"] % 2
    _check_final_state(path, 5)


def test_random_churn_keeps_every_invariant(tmp_path: Path):
    path = tmp_path / "churn.sqlite3"
    _register_all(str(path), ["en" if user % 4 else "es" for user in range(1, USERS + 1)])
    results = _run(_churn, path, 400)
    violations = [v for batch, _ in results for v in batch]
    assert violations == []
    matched = [chat for _, batch in results for chat in batch]
    assert len(matched) == len(set(matched)), "a chat was reported as made twice"
    _check_final_state(path, 2)
