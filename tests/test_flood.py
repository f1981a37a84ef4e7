"""The flood limit: the rule, its MongoDB pipeline form, and the limit across processes."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import (
    BACKENDS,
    FunctionServer,
    backend_env,
    bot_env,
    drop_test_repository,
    open_test_repository,
)
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.domain.flood import FloodRule, FloodState, admit
from messagine.models import Profile

RULE = FloodRule()
NOTICE = "did not get through: you are sending faster than Telegram lets the bot"

times = st.lists(st.floats(min_value=0.0, max_value=30.0, allow_nan=False), max_size=60)
albums = st.one_of(st.none(), st.sampled_from(["a", "b", "$where", ""]))


def run(times: list[float], albums: list[str | None] | None = None) -> list[bool]:
    """Whether each update at ``times`` (seconds) is dropped."""
    state = FloodState()
    dropped = []
    for i, now in enumerate(times):
        state, verdict = admit(state, now, (albums or [None] * len(times))[i], RULE)
        assert verdict.warn == verdict.throttled, "every dropped update is named to its sender"
        dropped.append(verdict.throttled)
    return dropped


def test_a_burst_of_eight_passes_at_once_and_the_ninth_is_dropped():
    assert run([100.0] * 9) == [False] * 8 + [True]


def test_a_burst_of_five_short_messages_in_two_seconds_passes():
    assert run([100 + 0.4 * i for i in range(5)]) == [False] * 5


def test_sending_one_a_second_forever_passes():
    assert not any(run([100.0 + i for i in range(500)]))


def test_sustained_flooding_is_limited_to_one_a_second_after_the_burst():
    dropped = run([100 + 0.25 * i for i in range(200)])  # four a second for 50 s
    passed = dropped.count(False)
    assert 8 + 49 <= passed <= 8 + 51, passed


def test_an_album_counts_once():
    assert run([100.0] * 20, ["a"] * 20) == [False] * 20
    # Two albums interleaved cost one each; once one is dropped, its album's last admitted
    # neighbour still rides free.
    assert run([100.0] * 10, ["a", "b"] * 5) == [False] * 8 + [True, False]


def test_a_dropped_update_costs_nothing_so_a_pause_frees_the_sender():
    state = FloodState()
    for _ in range(30):
        state, _ = admit(state, 100.0, None, RULE)
    state, verdict = admit(state, 101.0, None, RULE)
    assert not verdict.throttled, "one second refills one update, whatever was dropped"


@given(st.lists(st.tuples(st.floats(min_value=0.0, max_value=5.0, allow_nan=False), albums),
                max_size=80))
def test_the_level_stays_within_the_burst_and_drops_only_when_full(
        steps: list[tuple[float, str | None]]):
    state, now = FloodState(), 1_000.0
    for gap, album in steps:
        now += gap
        before = state
        state, verdict = admit(state, now, album, RULE)
        assert 0.0 <= state.level <= RULE.limit
        drained = max(0.0, before.level - gap / RULE.refill_s)
        if verdict.throttled:
            assert drained + 1 > RULE.limit and state.last_album == before.last_album
        else:
            assert state.last_album == album


@given(times, st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_a_clock_going_back_never_refills_the_bucket(backwards: list[float], start: float):
    state = FloodState(level=float(RULE.limit), at=start)
    for step in backwards:
        state, verdict = admit(state, start - step, None, RULE)
        assert verdict.throttled and state.at == start


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_applies_the_same_rule(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest):
    repo = open_test_repository(request, backend, tmp_path / "flood.sqlite3")
    rng = random.Random(7)
    state = FloodState()
    now = 1_000.0
    dropped = 0
    try:
        for update_id in range(1, 151):
            now += rng.choice([0.05, 0.05, 0.1, 0.2, 0.3, 0.9, 4.0])
            album = rng.choice([None, None, None, "album-1", "album-2"])
            state, verdict = admit(state, now, album, RULE)
            opened = repo.open_update(update_id, Profile(5, "Eve", None, None, None), "en", now,
                                      album)
            assert (opened.throttled, opened.warn) == (verdict.throttled, verdict.warn), \
                f"step {update_id} at {now}"
            dropped += verdict.throttled
        assert 10 <= dropped <= 140, "the walk crosses the limit both ways"
    finally:
        drop_test_repository(request, repo)


def test_the_limit_holds_across_two_processes(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "shared.sqlite3", FLOOD_LIMIT="3",
                  FLOOD_REFILL_SECONDS="3600")
    servers = [FunctionServer({**env, "SQLITE_PATH": str(tmp_path / "shared.sqlite3")})
               for _ in range(2)]
    try:
        alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
        servers[0].post(alice.command("find_chat"))
        servers[1].post(bob.command("find_chat"))
        fake_api.reset_calls()
        texts = [bob.text(f"quick {i}") for i in range(6)]
        outcomes = [servers[i % 2].post(text).status_code for i, text in enumerate(texts)]
        assert outcomes == [200] * 6
        copies = fake_api.calls_of("copyMessage")
        notices = [c for c in fake_api.calls_of("sendMessage") if NOTICE in c.params["text"]]
        assert len(copies) == 2, "find_chat counted once, so two texts fit the burst of 3"
        assert [n.params["reply_parameters"]["message_id"] for n in notices] == \
            [t["message"]["message_id"] for t in texts[2:]]
        assert {n.chat_id for n in notices} == {bob.id}
    finally:
        for server in servers:
            server.stop()


# -- through the HTTP entry, with the default rule, on every backend -------------------------

@pytest.fixture(scope="module", params=BACKENDS)
def flood_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[FunctionServer, FakeBotApi]]:
    """A function server with the default burst (other tests lift the limit) and a refill
    of one a minute, so that sustained sending is over the limit on any machine."""
    with FakeBotApi() as api:
        path = tmp_path_factory.mktemp("flood") / "server.sqlite3"
        env = {**bot_env(api, path, FLOOD_REFILL_SECONDS="60"),
               **backend_env(request, request.param)}
        del env["FLOOD_LIMIT"]
        server = FunctionServer(env)
        yield server, api
        server.stop()


def test_a_burst_passes_and_sustained_flooding_is_told_message_by_message(
        flood_server: tuple[FunctionServer, FakeBotApi]):
    server, api = flood_server
    alice, bob = api.user(31, "Alice"), api.user(32, "Bob")
    assert server.post(alice.command("find_chat")).status_code == 200
    assert server.post(bob.command("find_chat")).status_code == 200
    burst = []
    for word in ("lol", "wait", "what", "do you", "do"):
        burst.append(bob.text(word))
        assert server.post(burst[-1]).status_code == 200
        time.sleep(0.4)
    assert [m.get("text") for m in alice.inbox()][-5:] == ["lol", "wait", "what", "do you", "do"]
    assert not [m for m in bob.inbox() if NOTICE in m.get("text", "")]

    # One at a time, as Telegram delivers a chat's updates, and faster than the refill.
    flood = [bob.text(f"flood {i}") for i in range(12)]
    for update in flood:
        assert server.post(update).status_code == 200
    arrived = {m["text"] for m in alice.inbox() if m.get("text", "").startswith("flood ")}
    told = {m["reply_to_message"]["text"] for m in bob.inbox()
            if NOTICE in m.get("text", "") and "reply_to_message" in m}
    sent = {u["message"]["text"] for u in flood}
    assert told, "sustained flooding is limited"
    assert arrived | told == sent and not arrived & told, \
        "each message arrived or its sender was told, by a reply to it; never both"
    assert 2 <= len(arrived) <= 3, "the rest of the burst of 8 (and at most one refill)"
