"""The reminders job: nudges once per idle period, lobby timeouts, overlap, pacing, 429,
deadlines and its HTTP entry point, on every backend with a controllable clock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import requests

from conftest import Clock, FunctionServer, MakeBot, bot_env
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.runtime import Runtime

HOUR = 3600.0


@pytest.fixture
def bot(make_bot: MakeBot) -> Runtime:
    return make_bot(REMINDER_AFTER_HOURS="24", LOBBY_TIMEOUT_HOURS="48", JOB_SECRET="job-secret")


def texts_to(fake_api: FakeBotApi, user: FakeUser) -> list[str]:
    return [c.params["text"] for c in fake_api.calls_of("sendMessage", user.id)]


def test_each_state_gets_its_nudge_once_per_idle_period(
    bot: Runtime, fake_api: FakeBotApi, clock: Clock
):
    idle, waiting = fake_api.user(1, "Idle"), fake_api.user(2, "Waiting")
    a, b = fake_api.user(3, "A"), fake_api.user(4, "B")
    for update in (idle.command("start"), a.command("find_chat"), b.command("find_chat"),
                   waiting.command("find_chat")):
        bot.pipeline.process(update)
    clock.advance(10 * HOUR)
    fake_api.reset_calls()
    assert bot.reminders.run().sent == 0, "nobody has been inactive for 24 hours yet"
    a_in_chat = bot.repository.get_user(a.id)
    assert a_in_chat is not None and a_in_chat.chat is not None

    clock.advance(15 * HOUR)
    summary = bot.reminders.run()
    assert summary.sent == 4 and summary.failed == 0
    assert texts_to(fake_api, idle) == ["It has been a while! How about finding a chat?"]
    offer, nudge = texts_to(fake_api, waiting)
    assert offer.startswith("Nobody who speaks English has come along"), "waited > 15 min"
    assert nudge.startswith("You are still searching for a chat")
    assert texts_to(fake_api, a) == ["You are still in a chat. How about saying something?"]
    buttons = fake_api.calls_of("sendMessage", idle.id)[0].params["reply_markup"]
    assert buttons["inline_keyboard"][0][0]["callback_data"] == "find"

    fake_api.reset_calls()
    clock.advance(30 * HOUR)
    assert bot.reminders.run().sent == 0, "one reminder per idle period"
    bot.pipeline.process(idle.command("help"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    assert bot.reminders.run().sent == 1, "activity starts a new idle period"
    assert len(fake_api.calls_of("sendMessage", idle.id)) == 1


def test_excluded_users_get_no_reminder(bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    blocked, banned = fake_api.user(11, "Blocked"), fake_api.user(12, "Banned")
    quiet, gone = fake_api.user(13, "Quiet"), fake_api.user(14, "Gone")
    for user in (blocked, banned, quiet, gone):
        bot.pipeline.process(user.command("start"))
    bot.pipeline.process(blocked.block_bot())
    bot.repository.set_banned(banned.id, banned=True)
    assert bot.pipeline.process(quiet.command("reminders off")).outcome == "reminders:off"
    bot.pipeline.process(gone.command("deleteme"))
    bot.pipeline.process(gone.press_button("Delete everything"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    summary = bot.reminders.run()
    assert summary.sent == 0 and fake_api.calls_of("sendMessage") == []
    assert summary.skipped == {"blocked": 1, "banned": 1, "opted_out": 1}
    bot.pipeline.process(quiet.command("reminders on"))
    clock.advance(25 * HOUR)
    assert bot.reminders.run().sent == 1


def test_the_lobby_lets_go_after_its_timeout(bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    waiting = fake_api.user(21, "Waiting")
    bot.pipeline.process(waiting.command("find_chat"))
    clock.advance(49 * HOUR)
    fake_api.reset_calls()
    summary = bot.reminders.run()
    assert summary.lobby_timeouts == 1
    state = bot.repository.get_user(waiting.id)
    assert state is not None and not state.waiting
    notice, nudge = fake_api.calls_of("sendMessage", waiting.id)
    assert notice.params["text"].startswith("Nobody came along")
    assert notice.params["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "find"
    assert nudge.params["text"].startswith("It has been a while"), "now idle, nudged as such"


def test_two_overlapping_runs_remind_each_user_once(
    bot: Runtime, fake_api: FakeBotApi, clock: Clock
):
    users = [fake_api.user(100 + i, f"U{i}") for i in range(40)]
    for user in users:
        bot.pipeline.process(user.command("start"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    summaries = []
    runs = [threading.Thread(target=lambda: summaries.append(bot.reminders.run()))
            for _ in range(2)]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert sum(s.sent for s in summaries) == 40
    sends = fake_api.calls_of("sendMessage")
    assert sorted(c.chat_id for c in sends) == [u.id for u in users]
    # Paced under Telegram's 30 messages per second, across both runs together.
    times = sorted(c.at for c in sends)
    assert all(times[i + 30] - times[i] >= 1.0 for i in range(len(times) - 30)) or \
        len(times) <= 30


def test_a_short_429_is_waited_out_and_a_long_one_stops_the_run(
    bot: Runtime, fake_api: FakeBotApi, clock: Clock
):
    users = [fake_api.user(200 + i, f"U{i}") for i in range(3)]
    for user in users:
        bot.pipeline.process(user.command("start"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    fake_api.fail("sendMessage", status=429, retry_after=1)
    assert bot.reminders.run().sent == 3
    for user in users:
        bot.pipeline.process(user.command("help"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    fake_api.fail("sendMessage", status=429, retry_after=600)
    first = bot.reminders.run()
    assert first.sent == 0 and first.stopped_early
    second = bot.reminders.run()
    assert second.sent == 3, "the claim was given back, so the next run sends it"


def test_a_user_who_blocked_the_bot_is_marked(bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    user = fake_api.user(301, "Silent")
    bot.pipeline.process(user.command("start"))
    fake_api.blocked.add(user.id)
    clock.advance(25 * HOUR)
    assert bot.reminders.run().failed == 1
    state = bot.repository.get_user(user.id)
    assert state is not None and state.blocked


def test_a_run_stops_at_its_deadline_and_the_next_continues(
    make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock
):
    bot = make_bot(REMINDER_RUN_SECONDS="5")
    users = [fake_api.user(400 + i, f"U{i}") for i in range(90)]
    for user in users:
        bot.pipeline.process(user.command("start"))
    clock.advance(25 * HOUR)
    fake_api.reset_calls()
    runs = [bot.reminders.run()]
    assert runs[0].stopped_early and 0 < runs[0].sent < 90, "14 a second for ~4 s"
    while runs[-1].stopped_early and len(runs) < 6:
        runs.append(bot.reminders.run())
    assert sum(run.sent for run in runs) == 90 and not runs[-1].stopped_early
    assert sorted(c.chat_id for c in fake_api.calls_of("sendMessage")) == [u.id for u in users]


def test_the_entry_point_needs_the_job_secret(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "job.sqlite3", JOB_SECRET="the-job-secret")
    server = FunctionServer(env, target="reminders")
    try:
        assert requests.post(server.url, timeout=30).status_code == 401
        wrong = requests.post(server.url, headers={"X-Job-Secret": "nope"}, timeout=30)
        assert wrong.status_code == 401
        assert requests.get(server.url, timeout=30).status_code == 405
        ok = requests.post(server.url, headers={"X-Job-Secret": "the-job-secret"}, timeout=30)
        assert ok.status_code == 200
        assert ok.json() == {"sent": 0, "lobby_timeouts": 0, "language_offers": 0, "failed": 0,
                             "stopped_early": False,
                             "skipped": {"blocked": 0, "banned": 0, "opted_out": 0},
                             "purged": {"messages": 0, "claims": 0, "chats": 0,
                                        "reports": 0, "exclusions": 0, "age_refusals": 0},
                             "idle_chats_ended": 0, "inactivity_notices": 0,
                             "accounts_erased": 0, "erasures_finished": 0}
        assert "reminders run" in server.log()
    finally:
        server.stop()


def test_a_long_wait_is_offered_the_any_language_pool(
    bot: Runtime, fake_api: FakeBotApi, clock: Clock
):
    english = fake_api.user(501, "En", language_code="en")
    german = fake_api.user(502, "De", language_code="de")
    french = fake_api.user(503, "Fr", language_code="fr")
    for user in (english, german):
        bot.pipeline.process(user.command("find_chat"))
    clock.advance(20 * 60)
    summary = bot.reminders.run()
    assert summary.language_offers == 2
    assert english.last()["text"].startswith("Nobody who speaks English has come along")
    assert german.last()["text"].startswith("Bisher ist niemand gekommen")
    outcome = bot.pipeline.process(english.press_button("Chat with anyone")).outcome
    assert outcome == "button:any_language+already_waiting"
    bot.pipeline.process(french.command("find_chat"))
    state = bot.repository.get_user(french.id)
    assert state is not None and state.waiting, "French did not opt in, so no match"
    outcome = bot.pipeline.process(german.press_button("Mit allen chatten")).outcome
    assert outcome == "button:any_language+matched"
    assert english.last()["text"].startswith("Chat started")
    assert german.last()["text"].startswith("Der Chat hat begonnen")
