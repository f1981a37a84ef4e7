"""The flood limit: the rule, its MongoDB pipeline form, and the limit across processes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import (
    BACKENDS,
    FunctionServer,
    bot_env,
    drop_test_repository,
    open_test_repository,
)
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.domain.flood import FloodRule, FloodState, admit
from messagine.models import Profile

RULE = FloodRule()


def run(times: list[float], albums: list[str | None] | None = None) -> list[tuple[bool, bool]]:
    state = FloodState()
    verdicts = []
    for i, now in enumerate(times):
        state, verdict = admit(state, now, (albums or [None] * len(times))[i], RULE)
        verdicts.append((verdict.throttled, verdict.warn))
    return verdicts


def test_three_per_window_then_one_warning_and_a_cooldown():
    assert run([100, 100.1, 100.2, 100.3, 100.4, 104, 106]) == [
        (False, False), (False, False), (False, False), (True, True), (True, False),
        (True, False), (False, False)]


def test_an_album_counts_once():
    times = [100, 100.1, 100.2, 100.3, 100.4, 100.5]
    albums: list[str | None] = ["a", "a", "a", "a", None, None]
    assert run(times, albums) == [(False, False)] * 6


def test_cooldowns_rise_with_repeated_floods_and_are_forgotten_after_an_hour():
    state = FloodState()
    cooldowns = []
    now = 1000.0
    for _ in range(4):
        for _ in range(4):
            state, _ = admit(state, now, None, RULE)
            now += 0.1
        cooldowns.append(round(state.cooldown_until - now + 0.1, 1))
        now = state.cooldown_until + 0.5
    assert cooldowns == [5.0, 10.0, 20.0, 40.0]
    now += 3601
    for _ in range(4):
        state, _ = admit(state, now, None, RULE)
    assert state.strikes == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_applies_the_same_rule(backend: str, tmp_path: Path,
                                            request: pytest.FixtureRequest):
    repo = open_test_repository(request, backend, tmp_path / "flood.sqlite3")
    rng = random.Random(7)
    state = FloodState()
    now = 1_000.0
    try:
        for update_id in range(1, 151):
            now += rng.choice([0.05, 0.3, 0.9, 2.5, 4.0, 11.0])
            album = rng.choice([None, None, None, "album-1", "album-2"])
            state, verdict = admit(state, now, album, RULE)
            opened = repo.open_update(update_id, Profile(5, "Eve", None, None, None), "en", now,
                                      album)
            assert (opened.throttled, opened.warn) == (verdict.throttled, verdict.warn), \
                f"step {update_id} at {now}"
    finally:
        drop_test_repository(request, repo)


def test_the_limit_holds_across_two_processes(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "shared.sqlite3", FLOOD_LIMIT="3")
    servers = [FunctionServer({**env, "SQLITE_PATH": str(tmp_path / "shared.sqlite3")})
               for _ in range(2)]
    try:
        alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
        servers[0].post(alice.command("find_chat"))
        servers[1].post(bob.command("find_chat"))
        fake_api.reset_calls()
        outcomes = [servers[i % 2].post(bob.text(f"quick {i}")).status_code for i in range(6)]
        assert outcomes == [200] * 6
        copies = fake_api.calls_of("copyMessage")
        warnings = [c for c in fake_api.calls_of("sendMessage") if "slow down" in c.params["text"]]
        assert len(copies) == 2, "find_chat counted once, so two texts fit the limit of 3"
        assert len(warnings) == 1 and warnings[0].chat_id == bob.id
    finally:
        for server in servers:
            server.stop()
