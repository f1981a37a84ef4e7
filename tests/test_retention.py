"""Retention by the scheduled job (issue 18, item 6), through the HTTP entries on every
backend with a shifted clock: idle chats end and both users are told; blocks and reports
keep two users apart for their period only; an inactive account gets one notice, then is
erased as /deleteme erases it, unless its user came back."""

from __future__ import annotations

import flask
import pytest

from conftest import Clock, MakeBot
from messagine import job
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.runtime import Runtime
from messagine.storage.port import StorageUnavailable
from support.http_entries import APP, JOB_SECRET, post, run_job

HOUR, DAY = 3_600.0, 86_400.0
IDLE_ENDED = "Dieser Chat wurde beendet, weil lange niemand darin geschrieben hat."


@pytest.fixture
def bot(make_bot: MakeBot) -> Runtime:
    return make_bot(JOB_SECRET=JOB_SECRET, IDLE_CHAT_HOURS="72", RECENT_PARTNERS="0",
                    EXCLUSION_RETENTION_DAYS="90", REPORT_RETENTION_DAYS="90",
                    INACTIVE_ACCOUNT_DAYS="30", INACTIVE_NOTICE_DAYS="7",
                    REMINDER_AFTER_HOURS="2000", LOBBY_TIMEOUT_HOURS="720")


def pair(runtime: Runtime, a: FakeUser, b: FakeUser) -> None:
    post(runtime, a.command("find_chat"))
    post(runtime, b.command("find_chat"))
    state = runtime.repository.get_user(a.id)
    assert state is not None and state.chat is not None and state.chat.partner_id == b.id


def test_a_chat_nobody_writes_in_ends_and_both_are_told(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    anna = fake_api.user(901, "Anna", language_code="de")
    bernd = fake_api.user(902, "Bernd", language_code="de")
    pair(bot, anna, bernd)
    post(bot, anna.text("hi"))
    clock.advance(71 * HOUR)
    assert run_job(bot)["idle_chats_ended"] == 0
    post(bot, bernd.text("still here"))  # one side writing keeps the chat for both
    clock.advance(71 * HOUR)
    assert run_job(bot)["idle_chats_ended"] == 0, "Bernd wrote 71 hours ago"
    clock.advance(2 * HOUR)
    assert run_job(bot)["idle_chats_ended"] == 1
    for user in (anna, bernd):  # each in their language
        assert user.last()["text"] == IDLE_ENDED
        buttons = [b["callback_data"] for row in user.last()["reply_markup"]["inline_keyboard"]
                   for b in row]
        assert "find" in buttons, "the keyboard of any ended chat"
        state = bot.repository.get_user(user.id)
        assert state is not None and state.chat is None
    records = bot.repository.export_user(anna.id)
    assert records is not None and [c.end_reason for c in records.chats] == ["idle"]
    assert run_job(bot)["idle_chats_ended"] == 0, "told once"
    pair(bot, anna, bernd)


def test_a_block_keeps_two_apart_for_its_period_then_goes(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    anna, bernd = fake_api.user(911, "Anna"), fake_api.user(912, "Bernd")
    pair(bot, anna, bernd)
    post(bot, anna.command("block"))
    clock.advance(89 * DAY)
    for user in (anna, bernd):
        post(bot, user.command("find_chat"))  # both active: no erasure in between
    assert run_job(bot)["purged"]["exclusions"] == 0
    state = bot.repository.get_user(bernd.id)
    assert state is not None and state.waiting and state.chat is None, "still apart"
    for user in (anna, bernd):
        post(bot, user.command("cancel"))
    clock.advance(2 * DAY)
    assert run_job(bot)["purged"]["exclusions"] == 1
    # (A search already waiting keeps whom it avoids until it ends: MongoDB's lobby entry.)
    post(bot, bernd.command("find_chat"))
    post(bot, anna.command("find_chat"))
    state = bot.repository.get_user(anna.id)
    assert state is not None and state.chat is not None and state.chat.partner_id == bernd.id


def test_an_inactive_account_gets_one_notice_then_is_erased(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    gone, back = fake_api.user(921, "Gone", username="gone_user"), fake_api.user(922, "Back")
    for user in (gone, back):
        post(bot, user.command("start"))
    clock.advance(22 * DAY)
    assert run_job(bot)["inactivity_notices"] == 0, "23 days before erasure: too early"
    clock.advance(2 * DAY)  # away 24 days: the erasure is 6 days off... 7 from the notice
    summary = run_job(bot)
    assert summary["inactivity_notices"] == 2
    notice = gone.last()["text"]
    assert notice.startswith("You haven't used Messagine for a long time.")
    assert "/deleteme" in notice
    assert run_job(bot)["inactivity_notices"] == 0, "one notice per absence"
    post(bot, back.command("help"))  # back in time: kept
    clock.advance(6 * DAY)
    assert run_job(bot)["accounts_erased"] == 0, "the notice promised 7 days"
    clock.advance(2 * DAY)
    fake_api.reset_calls()
    summary = run_job(bot)
    assert summary["accounts_erased"] == 1 and summary["inactivity_notices"] == 0
    assert fake_api.calls_of("sendMessage", gone.id) == [], "erased without a word more"
    assert bot.repository.get_user(gone.id) is None
    assert bot.repository.export_user(gone.id) is None
    assert bot.repository.get_user(back.id) is not None
    clock.advance(30 * DAY)
    assert run_job(bot)["inactivity_notices"] == 1, "a new absence, a new notice"


def test_notices_claimed_by_a_run_the_store_stopped_are_sent_by_the_next(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, monkeypatch: pytest.MonkeyPatch):
    """The first user of a batch has blocked the bot, and marking them blocked fails (the
    store went away): the run stops half way through its batch. The users it had claimed
    and not told get their notice from the next run: nobody is erased without it."""
    blocked = fake_api.user(951, "Blocked")
    post(bot, blocked.command("start"))
    clock.advance(HOUR)  # the longest away: first in the batch
    others = [fake_api.user(952, "Second"), fake_api.user(953, "Third")]
    for user in others:
        post(bot, user.command("start"))
    clock.advance(24 * DAY)
    fake_api.reset_calls()
    fake_api.fail("sendMessage", chat_id=blocked.id, status=403)

    def store_gone(user_id: int, blocked: bool) -> None:
        raise StorageUnavailable("the store went away")

    with monkeypatch.context() as patched:
        patched.setattr(bot.repository, "set_blocked", store_gone)
        with APP.test_request_context("/", method="POST",
                                      headers={job.JOB_SECRET_HEADER: JOB_SECRET}):
            assert job.handle(flask.request, bot)[1] != 200
    assert all(fake_api.calls_of("sendMessage", user.id) == [] for user in others)
    # All three: the first was never marked blocked, so it is tried again too.
    assert run_job(bot)["inactivity_notices"] == 3
    for user in others:
        assert user.last()["text"].startswith("You haven't used Messagine for a long time.")


def test_banned_users_and_age_refusals_are_left_to_their_own_rules(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    banned = fake_api.user(931, "Banned")
    post(bot, banned.command("start"))
    bot.repository.set_banned(banned.id, banned=True)
    bot.repository.confirm_age(932, False, clock())  # a refusal's marker
    clock.advance(60 * DAY)
    summary = run_job(bot)
    assert summary["inactivity_notices"] == 0 and summary["accounts_erased"] == 0
    state = bot.repository.get_user(banned.id)
    assert state is not None and state.banned


def test_a_report_is_kept_for_its_period_then_deleted(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    anna, bernd = fake_api.user(941, "Anna"), fake_api.user(942, "Bernd")
    pair(bot, anna, bernd)
    post(bot, anna.command("report"))
    post(bot, anna.press_button("Spam or ads"))
    records = bot.repository.export_user(anna.id)
    assert records is not None and len(records.reports) == 1
    clock.advance(89 * DAY)
    post(bot, anna.command("help"))  # active: no erasure in between
    assert run_job(bot)["purged"]["reports"] == 0
    clock.advance(2 * DAY)
    assert run_job(bot)["purged"]["reports"] == 1
    records = bot.repository.export_user(anna.id)
    assert records is not None and records.reports == []


def test_an_inactive_account_in_a_chat_the_partner_keeps_alive_ends_it_before_erasure(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    gone, active = fake_api.user(971, "Gone"), fake_api.user(972, "Active")
    pair(bot, gone, active)
    erased_on = None
    for day in range(1, 45):
        clock.advance(DAY)
        post(bot, active.text(f"still there? {day}"))  # the chat is never idle
        if run_job(bot)["accounts_erased"]:
            erased_on = day
            break
    assert erased_on is not None, "erased once noticed and the notice's days passed"
    state = bot.repository.get_user(active.id)
    assert state is not None and state.chat is None
    assert active.last()["text"] == "Chat closed by your partner."
    records = bot.repository.export_user(active.id)
    assert records is not None and all(chat.ended_at is not None for chat in records.chats), \
        "ended, so that the chat's own retention period applies to it"


def test_a_notice_that_failed_is_sent_by_the_next_run_and_the_erasure_waits_for_it(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    gone = fake_api.user(951, "Gone")
    post(bot, gone.command("start"))
    clock.advance(24 * DAY)
    fake_api.fail("sendMessage", chat_id=gone.id, status=502, times=1)
    summary = run_job(bot)
    assert summary["inactivity_notices"] == 0 and summary["failed"] == 1
    assert not gone.last()["text"].startswith("You haven't used Messagine")
    clock.advance(3 * DAY)
    assert run_job(bot)["inactivity_notices"] == 1, "the next run sends the notice"
    assert gone.last()["text"].startswith("You haven't used Messagine for a long time.")
    clock.advance(6 * DAY)  # 9 days after the failed attempt, 6 after the notice
    assert run_job(bot)["accounts_erased"] == 0, "the notice promised 7 days"
    assert bot.repository.get_user(gone.id) is not None
    clock.advance(2 * DAY)
    assert run_job(bot)["accounts_erased"] == 1
    assert bot.repository.get_user(gone.id) is None


def test_a_ban_on_an_erased_users_report_outlives_the_reports_period(
        make_bot: MakeBot, fake_api: FakeBotApi, clock: Clock):
    moderators, admin_id = -100_951_000, 959
    bot = make_bot(JOB_SECRET=JOB_SECRET, RECENT_PARTNERS="0", REPORT_RETENTION_DAYS="90",
                   ADMIN_CHAT_ID=str(moderators), ADMIN_IDS=str(admin_id))
    victim, offender = fake_api.user(961, "Victim"), fake_api.user(962, "Offender")
    pair(bot, victim, offender)
    post(bot, victim.command("report"))
    post(bot, victim.press_button("Spam or ads"))
    post(bot, offender.command("deleteme"))
    post(bot, offender.press_button("Delete everything"))
    card = fake_api.messages(moderators)[0]
    post(bot, {"update_id": fake_api.next_update_id(), "callback_query": {
        "id": "cb-ban", "from": fake_api.user(admin_id, "Admin").profile, "chat_instance": "1",
        "message": {**card, "chat": {"id": moderators, "type": "supergroup", "title": "Mods"}},
        "data": card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]}})
    assert "Their ban is kept" in fake_api.messages(moderators)[0]["text"]
    clock.advance(91 * DAY)
    assert run_job(bot)["purged"]["reports"] == 0, "the report holds the ban"
    post(bot, offender.command("start"))
    post(bot, offender.command("find_chat"))
    state = bot.repository.get_user(offender.id)
    assert state is not None and state.banned, "back after the period: still banned"
