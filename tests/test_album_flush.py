"""The album flush on every backend, in-process with a controlled clock: claims and retries.

The schedule is recorded instead of run, so each flush happens when the test says: a
flush that died holding the claim is taken over once its lease ends, one that died after
sending sends nothing more, and a Telegram failure gives the claim back for the retry.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from conftest import Clock, MakeBot
from messagine.albums import Flushed
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.domain import albums, claims
from messagine.domain.albums import Album, BatchState
from messagine.runtime import Runtime
from messagine.storage.port import StorageUnavailable


def _setup(make_bot: MakeBot, fake_api: FakeBotApi
           ) -> tuple[Runtime, list[tuple[str, int]], FakeUser, FakeUser]:
    runtime = make_bot()
    scheduled: list[tuple[str, int]] = []
    runtime.albums.schedule = lambda key, number: scheduled.append((key, number))
    a, b = fake_api.user(8_100_001, "A"), fake_api.user(8_100_002, "B")
    for user in (a, b):
        assert runtime.pipeline.process(user.command("find_chat")).status == 200
    return runtime, scheduled, a, b


def _collect(runtime: Runtime, user: FakeUser, count: int) -> list[int]:
    updates = user.album("photo", count)
    for update in updates:
        assert runtime.pipeline.process(update).outcome == "album:collected"
    return [u["message"]["message_id"] for u in updates]


def test_a_flush_that_died_holding_the_claim_is_taken_over(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    runtime, scheduled, a, b = _setup(make_bot, fake_api)
    ids = _collect(runtime, a, 3)
    assert len(scheduled) == 1, "one flush per album, asked for by its first item"
    key, number = scheduled[0]
    assert runtime.albums.flush(key, number) == Flushed("album:wait", retry=True)
    clock.advance(albums.QUIET_S + 0.1)
    runtime.repository.change_album(key, lambda album: albums.claim(
        album, number, "a flush that died", clock()))
    assert runtime.albums.flush(key, number) == Flushed("album:busy", retry=True)
    assert not fake_api.calls_of("copyMessages")
    clock.advance(runtime.albums.lease_s)
    assert runtime.albums.flush(key, number) == Flushed("album:sent")
    (call,) = fake_api.calls_of("copyMessages", b.id)
    assert call.params["message_ids"] == ids
    assert runtime.albums.flush(key, number) == Flushed("album:done")
    assert len(fake_api.calls_of("copyMessages")) == 1


@pytest.mark.parametrize("timeout_s", [claims.REQUEST_TIMEOUT_S, claims.MAX_REQUEST_TIMEOUT_S])
def test_the_schedule_outlasts_a_dead_flush_and_sends_before_it_gives_up(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock, timeout_s: float):
    """The queue's own retries (RETRIES, cloudbuild.yaml's) take over a claim left by a flush
    that died at the first attempt: the album is sent, and not given up with a notice."""
    runtime, scheduled, a, b = _setup(make_bot, fake_api)
    runtime.albums.lease_s = claims.lease_for(timeout_s)
    _collect(runtime, a, 2)
    key, number = scheduled[0]
    clock.advance(albums.FIRST_FLUSH_S)
    runtime.repository.change_album(key, lambda album: albums.claim(
        album, number, "a flush that died", clock(), lease_s=runtime.albums.lease_s))
    told = len(a.inbox())
    outcomes = []
    for retry in range(1, albums.RETRIES.attempts):
        clock.advance(albums.RETRIES.delay(retry))
        flushed = runtime.albums.flush(
            key, number, last_attempt=retry + 1 == albums.RETRIES.attempts)
        outcomes.append(flushed.outcome)
        if not flushed.retry:
            break
    assert outcomes[-1] == "album:sent", outcomes
    assert set(outcomes[:-1]) == {"album:busy"}
    assert len(fake_api.calls_of("copyMessages", b.id)) == 1
    assert len(a.inbox()) == told, "no notice to the sender"


def test_a_flush_that_died_after_sending_sends_nothing_more(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    runtime, scheduled, a, _ = _setup(make_bot, fake_api)
    _collect(runtime, a, 2)
    key, number = scheduled[0]
    clock.advance(albums.QUIET_S + 0.1)
    assert runtime.albums.flush(key, number).outcome == "album:sent"

    def died_before_marking_it_sent(album: Album | None) -> tuple[Album | None, None]:
        assert album is not None
        batch = album.batches[0]
        dead = replace(batch, state=BatchState.SENDING, owner="dead", lease_until=clock())
        return replace(album, batches=(dead,), version=album.version + 1), None

    runtime.repository.change_album(key, died_before_marking_it_sent)
    clock.advance(1)
    assert runtime.albums.flush(key, number) == Flushed("album:sent_before")
    assert len(fake_api.calls_of("copyMessages")) == 1


def test_telegram_unavailable_gives_the_claim_back_for_the_retry(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    runtime, scheduled, a, b = _setup(make_bot, fake_api)
    _collect(runtime, a, 2)
    key, number = scheduled[0]
    clock.advance(albums.QUIET_S + 0.1)
    fake_api.fail("copyMessages", status=502)
    assert runtime.albums.flush(key, number) == Flushed("retry:telegram", retry=True)
    assert runtime.albums.flush(key, number) == Flushed("album:sent")
    assert len(fake_api.calls_of("copyMessages", b.id)) == 1
    # The next album has a record and a flush of its own.
    _collect(runtime, a, 2)
    assert len(scheduled) == 2 and scheduled[1][0] != key


class _StoreThatBlips:
    """The bot's real store, whose ``nth`` read of a user fails as an outage would."""

    def __init__(self, store: Any, nth: int) -> None:
        self._store, self._nth, self.reads = store, nth, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def get_user(self, user_id: int) -> Any:
        self.reads += 1
        if self.reads == self._nth:
            raise StorageUnavailable("blip")
        return self._store.get_user(user_id)


def test_a_store_that_blips_after_the_copies_were_made_sends_nothing_twice(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    runtime, scheduled, a, b = _setup(make_bot, fake_api)
    _collect(runtime, a, 3)
    key, number = scheduled[0]
    clock.advance(albums.QUIET_S + 0.1)
    store = runtime.albums.repository
    blipping = _StoreThatBlips(store, nth=2)  # the sender, then the check after the copies
    runtime.albums.repository = blipping
    try:
        assert runtime.albums.flush(key, number) == Flushed("album:sent")
    finally:
        runtime.albums.repository = store
    assert blipping.reads >= 2, "the check after the copies was made"
    assert runtime.albums.flush(key, number) == Flushed("album:done")
    assert len(fake_api.calls_of("copyMessages", b.id)) == 1
