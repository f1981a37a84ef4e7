"""Mixpanel analytics end to end against a capture server over real HTTP."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from conftest import Clock, bot_env
from messagine.analytics import pseudonym
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.domain import albums
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings
from support.capture_server import CaptureServer

KEY = "pseudonym-key-for-tests-0123456789"
MIXPANEL_TOKEN = "mixpanel-project-token"
ALLOWED_PROPERTIES = {"token", "distinct_id", "time", "$insert_id", "mp_lib", "$lib_version",
                      "language", "duration_seconds", "messages_sent", "ended_by", "how"}
"""Each describes the acting user's own activity, never the partner's."""


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    server = CaptureServer()
    yield server
    server.stop()


@pytest.fixture
def tracked_bot(fake_api: FakeBotApi, tmp_path: Path, capture: CaptureServer,
                clock: Clock) -> Runtime:
    env = {**bot_env(fake_api, tmp_path / "bot.sqlite3"), "MIXPANEL_TOKEN": MIXPANEL_TOKEN,
           "ANALYTICS_PSEUDONYM_KEY": KEY, "MIXPANEL_EVENTS_URL": capture.url + "/track",
           "MIXPANEL_PEOPLE_URL": capture.url + "/engage"}
    return build_runtime(Settings.from_env(env), clock=clock)


def events_of(capture: CaptureServer, user_id: int) -> list[str]:
    distinct = pseudonym(KEY, user_id)
    return [e["event"] for e in capture.events() if e["properties"]["distinct_id"] == distinct]


def test_a_conversation_produces_exactly_these_events(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer, clock: Clock
):
    process = tracked_bot.pipeline.process
    alice = fake_api.user(501, "Alice", username="alice_private")
    bob = fake_api.user(502, "Bob")
    process(alice.command("start"))
    process(bob.command("start"))
    process(alice.press_button("Find Chat"))
    clock.advance(42)
    process(bob.command("find"))
    process(alice.text("a secret text with +15550100"))
    process(bob.media("sticker"))
    process(bob.media("location"))
    process(bob.press_button("Send"))
    process(alice.send({"game": {"title": "g", "description": "d", "photo": []}}))
    clock.advance(60)
    process(alice.command("exit_chat"))
    process(alice.press_button("Yes"))
    process(bob.block_bot())
    process(bob.unblock_bot())

    assert events_of(capture, alice.id) == [
        "command.start", "action.find_chat", "message.text", "message.invalid.game",
        "command.exit_chat", "action.exit_yes", "chat.ended"]
    assert events_of(capture, bob.id) == [
        "command.start", "command.find_chat", "chat.started", "message.sticker",
        "action.share_send", "message.location", "user.blocked_bot", "user.returned"]
    started = next(e for e in capture.events() if e["event"] == "chat.started")
    assert started["properties"]["language"] == "en"
    ended = next(e for e in capture.events() if e["event"] == "chat.ended")
    assert {k: ended["properties"][k] for k in (
        "duration_seconds", "messages_sent", "ended_by", "how")} == {
        "duration_seconds": 60, "messages_sent": 1, "ended_by": "self", "how": "exit"}

    for event in capture.events():
        assert set(event["properties"]) <= ALLOWED_PROPERTIES, event
        assert event["properties"]["token"] == MIXPANEL_TOKEN
    profiles = capture.people()
    created = [p for p in profiles if "$set_once" in p]
    assert {p["$distinct_id"] for p in created} == {pseudonym(KEY, 501), pseudonym(KEY, 502)}
    assert all(set(p["$set_once"]) == {"$created"} for p in created)
    assert any(p.get("$add") == {"chats": 1} for p in profiles)

    raw = unquote_plus(capture.raw())
    for private in ("secret text", "+15550100", "Alice", "alice_private", "Bob",
                    "CAAD-sticker", "52.52", fake_api.token):
        assert private not in raw, f"{private!r} reached the analytics vendor"
    # The Telegram ids appear nowhere as a value (random insert ids may hold their digits).
    sent = [*capture.events(), *capture.people()]
    values = [v for m in sent for v in [*m.values(), *m.get("properties", {}).values()]]
    assert not {501, 502, "501", "502"} & {v for v in values if isinstance(v, int | str)}


def test_the_pseudonym_is_keyed_and_stable():
    assert pseudonym(KEY, 501) == pseudonym(KEY, 501)
    assert pseudonym(KEY, 501) != pseudonym(KEY, 502)
    assert pseudonym(KEY, 501) != pseudonym("another-key-0123456789", 501)
    assert "501" not in pseudonym(KEY, 501) and len(pseudonym(KEY, 501)) == 32


def test_each_update_sends_one_request_per_endpoint(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer
):
    alice = fake_api.user(601, "Alice")
    tracked_bot.pipeline.process(alice.command("start"))
    assert sorted(path for path, _, _ in capture.requests) == ["/engage", "/track"]
    capture.requests.clear()
    tracked_bot.pipeline.process(alice.command("help"))
    assert [path for path, _, _ in capture.requests] == ["/track"]


def test_a_user_who_objected_is_not_tracked(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer
):
    alice = fake_api.user(701, "Alice")
    tracked_bot.pipeline.process(alice.command("start"))
    tracked_bot.repository.set_analytics_opt_out(alice.id, opt_out=True)
    capture.requests.clear()
    for update in (alice.command("help"), alice.command("find_chat"), alice.text("hi")):
        tracked_bot.pipeline.process(update)
    assert capture.requests == []


def test_nothing_about_an_objector_goes_out_in_the_partners_events(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer, clock: Clock
):
    process = tracked_bot.pipeline.process
    alice, bob = fake_api.user(711, "Alice"), fake_api.user(712, "Bob")
    process(alice.command("start"))
    tracked_bot.repository.set_analytics_opt_out(alice.id, opt_out=True)
    process(alice.command("find_chat"))
    clock.advance(77)
    process(bob.command("find_chat"))
    for text in ("one", "two", "three"):
        process(alice.text(text))
    process(bob.command("next"))
    assert events_of(capture, alice.id) == ["command.start"]  # from before the objection
    bob_events = [e for e in capture.events()
                  if e["properties"]["distinct_id"] == pseudonym(KEY, bob.id)]
    ended = next(e for e in bob_events if e["event"] == "chat.ended")
    assert ended["properties"]["messages_sent"] == 0
    for event in bob_events:
        assert set(event["properties"]) <= ALLOWED_PROPERTIES, event
        assert 3 not in event["properties"].values() and 77 not in event["properties"].values()


def test_a_dead_analytics_server_never_affects_the_user(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer,
    caplog: pytest.LogCaptureFixture,
):
    alice, bob = fake_api.user(801, "Alice"), fake_api.user(802, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        tracked_bot.pipeline.process(update)
    capture.stop()
    with caplog.at_level(logging.WARNING, logger="messagine.analytics"):
        result = tracked_bot.pipeline.process(alice.text("still delivered"))
    assert (result.status, result.outcome) == (200, "relayed")
    assert bob.last()["text"] == "still delivered"
    warnings = [r for r in caplog.records if r.name == "messagine.analytics"]
    assert len(warnings) == 1 and "dropped" in warnings[0].getMessage()


def test_a_slow_analytics_server_is_cut_off_by_the_timeout(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer,
    caplog: pytest.LogCaptureFixture,
):
    alice, bob = fake_api.user(901, "Alice"), fake_api.user(902, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        tracked_bot.pipeline.process(update)
    capture.delay = 10  # far longer than the 2 s timeout: only the timeout ends the wait
    with caplog.at_level(logging.WARNING, logger="messagine.analytics"):
        result = tracked_bot.pipeline.process(alice.text("not held up"))
    assert result.outcome == "relayed" and bob.last()["text"] == "not held up"
    warnings = [r.getMessage() for r in caplog.records if r.name == "messagine.analytics"]
    assert len(warnings) == 1 and "dropped" in warnings[0]


def test_deleteme_deletes_the_profile_and_sends_nothing_else(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer
):
    alice = fake_api.user(1001, "Alice")
    tracked_bot.pipeline.process(alice.command("start"))
    tracked_bot.pipeline.process(alice.command("deleteme"))
    capture.requests.clear()
    tracked_bot.pipeline.process(alice.press_button("Delete everything"))
    assert capture.events() == [], "no event about a user being erased"
    deletions = [p for p in capture.people() if "$delete" in p]
    assert [p["$distinct_id"] for p in deletions] == [pseudonym(KEY, 1001)]
    # Without MIXPANEL_GDPR_TOKEN, the events are not asked to be deleted.
    assert [path for path, _, _ in capture.requests] == ["/engage"]


def test_deleteme_asks_mixpanel_to_delete_the_users_events(
    fake_api: FakeBotApi, tmp_path: Path, capture: CaptureServer, clock: Clock
):
    env = {**bot_env(fake_api, tmp_path / "bot.sqlite3"), "MIXPANEL_TOKEN": MIXPANEL_TOKEN,
           "ANALYTICS_PSEUDONYM_KEY": KEY, "MIXPANEL_EVENTS_URL": capture.url + "/track",
           "MIXPANEL_PEOPLE_URL": capture.url + "/engage",
           "MIXPANEL_GDPR_TOKEN": "gdpr-oauth-token-for-tests",
           "MIXPANEL_DELETION_URL": capture.url + "/data-deletions"}
    bot = build_runtime(Settings.from_env(env), clock=clock)
    alice = fake_api.user(901, "Alice")
    bot.pipeline.process(alice.command("start"))
    bot.pipeline.process(alice.command("deleteme"))
    capture.requests.clear()
    capture.headers.clear()
    assert bot.pipeline.process(alice.press_button("Delete")).outcome.startswith("button:deleteme")
    deletions = [(path, body, headers) for (path, _, body), headers
                 in zip(capture.requests, capture.headers, strict=True)
                 if path.startswith("/data-deletions")]
    assert len(deletions) == 1
    path, body, headers = deletions[0]
    assert f"token={MIXPANEL_TOKEN}" in path
    assert headers["Authorization"] == "Bearer gdpr-oauth-token-for-tests"
    assert json.loads(body) == {"distinct_ids": [pseudonym(KEY, 901)], "compliance_type": "GDPR"}
    assert any(path == "/engage" for path, _, _ in capture.requests)  # the profile too



def test_nothing_goes_out_about_a_user_who_answered_under_age(
    fake_api: FakeBotApi, tmp_path: Path, capture: CaptureServer, clock: Clock
):
    env = {**bot_env(fake_api, tmp_path / "bot.sqlite3", MIN_AGE="16"),
           "MIXPANEL_TOKEN": MIXPANEL_TOKEN, "ANALYTICS_PSEUDONYM_KEY": KEY,
           "MIXPANEL_EVENTS_URL": capture.url + "/track",
           "MIXPANEL_PEOPLE_URL": capture.url + "/engage"}
    runtime = build_runtime(Settings.from_env(env), clock=clock)
    young = fake_api.user(601, "Young")
    runtime.pipeline.process(young.command("find_chat"))
    runtime.pipeline.process(young.press_button("No"))
    before = len(events_of(capture, young.id))
    runtime.pipeline.process(young.command("help"))
    runtime.pipeline.process(young.command("find_chat"))
    runtime.pipeline.process(young.press_button("Find Chat"))
    assert young.last()["text"].startswith("You told us you are under 16")
    assert len(events_of(capture, young.id)) == before, "the marker is opted out"


def test_an_inactive_account_erased_by_the_job_is_deleted_at_mixpanel_too(
    tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer, clock: Clock
):
    alice = fake_api.user(1101, "Alice")
    tracked_bot.pipeline.process(alice.command("start"))
    clock.advance(360 * 86_400)
    assert tracked_bot.reminders.run().inactivity_notices == 1
    clock.advance(15 * 86_400)
    capture.requests.clear()
    assert tracked_bot.reminders.run().accounts_erased == 1
    assert capture.events() == [], "no event about a user being erased"
    deletions = [p for p in capture.people() if "$delete" in p]
    assert [p["$distinct_id"] for p in deletions] == [pseudonym(KEY, 1101)]


def test_an_album_flush_sends_its_event_before_it_returns(
        tracked_bot: Runtime, fake_api: FakeBotApi, capture: CaptureServer, clock: Clock):
    """The flush is its own request (a Cloud Task) or a timer's thread: its events go
    out with it, not with some later update of that thread, if any ever comes."""
    scheduled: list[tuple[str, int]] = []
    tracked_bot.albums.schedule = lambda key, number: scheduled.append((key, number))
    alice, bob = fake_api.user(511, "Alice"), fake_api.user(512, "Bob")
    for user in (alice, bob):
        tracked_bot.pipeline.process(user.command("find_chat"))
    for update in alice.album("photo", 2):
        tracked_bot.pipeline.process(update)
    clock.advance(albums.QUIET_S + 0.1)
    (key, number), = scheduled
    done = threading.Event()
    worker = threading.Thread(target=lambda: (tracked_bot.albums.flush(key, number),
                                              done.set()))
    worker.start()  # a thread of its own, as the timer's: nothing else flushes its buffer
    worker.join(10)
    assert done.is_set()
    assert "message.album" in events_of(capture, 511)
