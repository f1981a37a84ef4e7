"""The age gate is binding (issue 18, items 7 and 8), through the HTTP entry on every
backend: a No from any prompt, old ones too, ends the chat or the wait at once, erases the
user but for the refusal marker, closes every route to a partner, sends no reminders, and
lasts AGE_REFUSAL_DAYS, after which the scheduled job deletes the marker."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conftest import Clock, MakeBot
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.runtime import Runtime
from support.http_entries import JOB_SECRET, post, run_job

DAY = 86_400.0
CONTACT = "messaginebot@gmail.com"


@pytest.fixture
def bot(make_bot: MakeBot) -> Runtime:
    return make_bot(MIN_AGE="16", AGE_REFUSAL_DAYS="30", JOB_SECRET=JOB_SECRET,
                    REMINDER_AFTER_HOURS="24", ANY_LANGUAGE_AFTER_MINUTES="15")


def age_prompt(user: FakeUser) -> dict[str, Any]:
    """The newest age question still showing (an answer replaces the one it was given on)."""
    return next(m for m in reversed(user.inbox()) if any(
        button["callback_data"] == "age:no"
        for row in m.get("reply_markup", {}).get("inline_keyboard", []) for button in row))


def answer_age(runtime: Runtime, user: FakeUser, yes: bool) -> str:
    """Press Yes or No on the newest prompt showing; the answer's text: in the prompt's
    place when it was the newest message, else at the bottom (docs/design.md)."""
    prompt = age_prompt(user)
    post(runtime, user.press(prompt["message_id"], "age:yes" if yes else "age:no"))
    now = next(m for m in user.inbox() if m["message_id"] == prompt["message_id"])
    return str((now if now.get("text") != prompt.get("text") else user.last()).get("text", ""))


def in_chat(runtime: Runtime, fake_api: FakeBotApi) -> tuple[FakeUser, FakeUser]:
    """Young and Adult, both past the question, in a chat; Young was asked twice and
    answered the newest, so an old prompt still shows its buttons."""
    young, adult = fake_api.user(801, "Young", username="young_one"), fake_api.user(802, "Adult")
    post(runtime, young.command("find_chat"))
    for user in (young, adult):
        post(runtime, user.command("find_chat"))
        answer_age(runtime, user, yes=True)
    assert adult.last()["text"].startswith("Chat started")
    return young, adult


def assert_only_the_marker(runtime: Runtime, user: FakeUser) -> None:
    state = runtime.repository.get_user(user.id)
    assert state is not None and state.age_refused and not state.age_confirmed
    assert state.chat is None and not state.waiting
    records = runtime.repository.export_user(user.id)
    assert records is not None
    profile = records.profile
    assert (profile.first_name, profile.last_name, profile.username) == ("", None, None)
    assert profile.age_answer == "no" and profile.age_answered_at is not None
    assert records.chats == [] and records.messages == [] and records.reports == []


def test_no_in_a_chat_on_an_old_prompt_ends_it_and_erases_all_but_the_marker(
        bot: Runtime, fake_api: FakeBotApi):
    young, adult = in_chat(bot, fake_api)
    post(bot, young.text("hello"))
    refusal = answer_age(bot, young, yes=False)
    assert adult.last()["text"].startswith("Chat closed by your partner.\n")
    assert "only for people aged 16 and over" in refusal and CONTACT in refusal
    assert "30 days" in refusal
    assert_only_the_marker(bot, young)
    partner = bot.repository.get_user(adult.id)
    assert partner is not None and partner.chat is None
    post(bot, adult.text("still there?"))
    assert "still there?" not in young.texts(), "nothing reaches the refused user any more"


def test_next_after_no_does_not_pair(bot: Runtime, fake_api: FakeBotApi):
    young, adult = in_chat(bot, fake_api)
    answer_age(bot, young, yes=False)
    post(bot, adult.command("find_chat"))
    post(bot, young.command("next"))
    closed = young.last()["text"]
    assert "under 16" in closed and CONTACT in closed
    for route in (young.command("find_chat"), young.press_button("Find Chat")):
        post(bot, route)
        assert young.last()["text"] == closed
    state = bot.repository.get_user(adult.id)
    assert state is not None and state.waiting and state.chat is None


def test_an_old_yes_after_no_leaves_the_answer_standing(bot: Runtime, fake_api: FakeBotApi):
    young, adult = fake_api.user(811, "Young"), fake_api.user(812, "Adult")
    post(bot, young.command("find_chat"))
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=False)
    post(bot, adult.command("find_chat"))
    answer_age(bot, adult, yes=True)
    post(bot, young.command("find_chat"))  # asked again? no: the answer stands
    assert "answer stands" in young.last()["text"]
    stands = answer_age(bot, young, yes=True)  # the old prompt's Yes
    assert "answer stands" in stands and CONTACT in stands
    assert_only_the_marker(bot, young)  # writing again stored nothing of them either
    state = bot.repository.get_user(adult.id)
    assert state is not None and state.waiting, "nobody was paired with the refused user"


def test_no_while_searching_leaves_at_once_and_the_any_language_offer_is_gated(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    young, other = fake_api.user(821, "Young"), fake_api.user(822, "Other")
    post(bot, young.command("find_chat"))
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=True)
    clock.advance(20 * 60)
    assert run_job(bot)["language_offers"] == 1
    answer_age(bot, young, yes=False)
    assert_only_the_marker(bot, young)
    post(bot, other.command("find_chat"))
    answer_age(bot, other, yes=True)
    post(bot, other.command("find_chat"))
    post(bot, young.press_button("Chat with anyone"))
    assert "answer stands" in young.last()["text"]
    state = bot.repository.get_user(other.id)
    assert state is not None and state.waiting and state.chat is None


def test_the_job_sends_the_marker_no_reminder_and_deletes_it_after_the_period(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    young = fake_api.user(831, "Young")
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=False)
    clock.advance(2 * DAY)
    post(bot, young.command("help"))  # active again: a reminder would be due a day later
    assert_only_the_marker(bot, young)
    clock.advance(2 * DAY)
    fake_api.reset_calls()
    summary = run_job(bot)
    assert summary["sent"] == 0 and fake_api.calls_of("sendMessage", young.id) == []
    assert summary["purged"]["age_refusals"] == 0
    clock.advance(25 * DAY)  # 29 days after the answer
    assert run_job(bot)["purged"]["age_refusals"] == 0
    post(bot, young.command("find_chat"))
    assert "answer stands" in young.last()["text"]
    clock.advance(2 * DAY)  # 31 days after the answer
    assert run_job(bot)["purged"]["age_refusals"] == 1
    assert bot.repository.get_user(young.id) is None
    post(bot, young.command("find_chat"))
    assert "16 or older" in young.last()["text"], "the gate asks again after the period"


def test_the_refused_are_answered_in_their_app_language(bot: Runtime, fake_api: FakeBotApi):
    young = fake_api.user(851, "Junge", language_code="de")
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=False)
    post(bot, young.command("find_chat"))
    assert young.last()["text"].startswith("Du hast uns gesagt, dass du jünger als 16 bist")
    assert_only_the_marker(bot, young)
    records = bot.repository.export_user(young.id)
    assert records is not None and records.profile.language_code is None


def test_deleteme_keeps_the_marker(bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    young = fake_api.user(841, "Young")
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=False)
    refused = bot.repository.export_user(young.id)
    assert refused is not None
    clock.advance(DAY)
    post(bot, young.command("deleteme"))
    post(bot, young.press_button("Delete everything"))
    after = bot.repository.export_user(young.id)
    assert after is not None and after.profile.age_answer == "no"
    assert after.profile.age_answered_at == refused.profile.age_answered_at
    post(bot, young.command("find_chat"))
    assert "answer stands" in young.last()["text"]


def test_a_no_pressed_again_does_not_restart_the_refusal_period(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock):
    young = fake_api.user(843, "Young")
    post(bot, young.command("find_chat"))
    prompt = age_prompt(young)
    answer_age(bot, young, yes=False)
    refused = bot.repository.export_user(young.id)
    assert refused is not None
    clock.advance(DAY)
    post(bot, young.press(prompt["message_id"], "age:no"))  # the old prompt, a day later
    again = bot.repository.export_user(young.id)
    assert again is not None and again.profile.age_answer == "no"
    assert again.profile.age_answered_at == refused.profile.age_answered_at


def test_a_redelivered_old_search_after_no_pairs_nobody(bot: Runtime, fake_api: FakeBotApi):
    """MongoDB and Firestore keep the update ids with the user's document, which the
    refusal erased: the old /find_chat then counts as new, and the gate stops it."""
    young, adult = fake_api.user(861, "Young"), fake_api.user(862, "Adult")
    search = young.command("find_chat")
    post(bot, search)
    post(bot, young.command("find_chat"))
    answer_age(bot, young, yes=True)  # searching now
    answer_age(bot, young, yes=False)  # on the first prompt
    post(bot, adult.command("find_chat"))
    answer_age(bot, adult, yes=True)
    before = young.last()
    post(bot, search)  # Telegram delivers the old search again
    if bot.repository.backend == "sqlite":  # its claims live apart from the user
        assert young.last() == before, "a duplicate: no work"
    else:
        assert "answer stands" in young.last()["text"], "the gate, not the question"
    state = bot.repository.get_user(adult.id)
    assert state is not None and state.waiting and state.chat is None
    assert_only_the_marker(bot, young)


def _while_stalled(runtime: Runtime, fake_api: FakeBotApi, rule: Any,
                   first: dict[str, Any], second: dict[str, Any]) -> None:
    """Deliver ``first``, and ``second`` while ``first`` waits out the 429 of ``rule``."""
    worker = threading.Thread(target=post, args=(runtime, first))
    worker.start()
    deadline = time.monotonic() + 10
    while rule.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rule.hits == 1, "the first update reached its 429"
    post(runtime, second)
    worker.join(timeout=30)
    assert not worker.is_alive()
    fake_api.forget(rule)


def test_a_no_while_next_waits_out_a_429_closes_its_search(bot: Runtime,
                                                            fake_api: FakeBotApi):
    young, adult = in_chat(bot, fake_api)
    waiting = fake_api.user(871, "Waiting")
    post(bot, waiting.command("find_chat"))
    answer_age(bot, waiting, yes=True)
    old_no = young.press(age_prompt(young)["message_id"], "age:no")
    # /next tells the old partner (429: waited out) and then searches with the user
    # as loaded before the No.
    rule = fake_api.fail("sendMessage", chat_id=adult.id, status=429, retry_after=1)
    _while_stalled(bot, fake_api, rule, young.command("next"), old_no)
    assert_only_the_marker(bot, young)
    state = bot.repository.get_user(waiting.id)
    assert state is not None and state.waiting and state.chat is None, \
        "the refused user was neither paired nor queued"
    assert any("under 16" in m.get("text", "") and CONTACT in m.get("text", "")
               for m in young.inbox()[-2:]), "the search answered as the closed gate"


def test_an_old_yes_processed_with_a_no_cannot_flip_it(bot: Runtime, fake_api: FakeBotApi):
    young, adult = fake_api.user(881, "Young"), fake_api.user(882, "Adult")
    post(bot, adult.command("find_chat"))
    answer_age(bot, adult, yes=True)  # waiting
    post(bot, young.command("find_chat"))
    post(bot, young.command("find_chat"))
    prompts = [m["message_id"] for m in young.inbox() if any(
        b["callback_data"] == "age:no"
        for row in m.get("reply_markup", {}).get("inline_keyboard", []) for b in row)]
    assert len(prompts) == 2
    # The Yes is loaded, then waits out a 429 on answering its button while the No is
    # processed in full; then it writes its answer and searches.
    rule = fake_api.fail("answerCallbackQuery", status=429, retry_after=1)
    _while_stalled(bot, fake_api, rule, young.press(prompts[0], "age:yes"),
                   young.press(prompts[1], "age:no"))
    assert_only_the_marker(bot, young)
    state = bot.repository.get_user(adult.id)
    assert state is not None and state.waiting and state.chat is None
