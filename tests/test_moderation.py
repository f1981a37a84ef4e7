"""Reports, blocks, bans, admin commands and Telegram's 429, on every backend."""

from __future__ import annotations

import pytest

from conftest import MakeBot
from messagine.dev.fake_bot_api import CONTENT_FIELDS, FakeBotApi, FakeUser
from messagine.moderation import EVIDENCE_MESSAGES
from messagine.runtime import Runtime
from messagine.storage.port import StorageUnavailable

ADMIN, MODERATORS = 900_001, -100_555_000
ALICE, BOB, CAROL = 900_101, 900_102, 900_103


@pytest.fixture
def bot(make_bot: MakeBot) -> Runtime:
    return make_bot(ADMIN_IDS=str(ADMIN), ADMIN_CHAT_ID=str(MODERATORS), RECENT_PARTNERS="0")


@pytest.fixture
def alice(fake_api: FakeBotApi) -> FakeUser:
    return fake_api.user(ALICE, "Alice")


@pytest.fixture
def bob(fake_api: FakeBotApi) -> FakeUser:
    return fake_api.user(BOB, "Bob")


def pair(bot: Runtime, a: FakeUser, b: FakeUser) -> None:
    assert bot.pipeline.process(a.command("find_chat")).outcome == "find:waiting"
    assert bot.pipeline.process(b.command("find_chat")).outcome == "find:matched"


def moderators_chat(fake_api: FakeBotApi) -> list[dict]:
    return fake_api.messages(MODERATORS)


def test_a_report_ends_the_chat_and_brings_evidence_to_the_moderators(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    process = bot.pipeline.process
    pair(bot, alice, bob)
    sent = [bob.text("buy cheap followers"), bob.media("photo", caption="click here"),
            bob.text("last spam")]
    for update in sent:
        process(update)
    assert process(alice.command("report")).outcome == "report:asked"
    # The prompt says what the moderators will see, and it is what they get below.
    assert f"copies of their last {EVIDENCE_MESSAGES} messages" in alice.last()["text"]
    assert "never who reported them" in alice.last()["text"]
    assert process(alice.press_button("Abuse")).outcome == "button:report:sent"
    assert "moderators will look at it" in alice.last()["text"]
    assert bob.last()["text"].startswith("Chat closed by your partner.\n"), \
        "no word about a report"
    assert all("report" not in t.lower() for t in bob.texts())

    report, *evidence = moderators_chat(fake_api)
    assert str(BOB) in report["text"] and "abuse" in report["text"]
    assert str(ALICE) not in report["text"], "the reporter stays hidden"
    assert [b["text"] for row in report["reply_markup"]["inline_keyboard"] for b in row] == \
        ["Ban", "Dismiss"]
    originals = [u["message"] for u in sent]
    assert [{k: v for k, v in m.items() if k in CONTENT_FIELDS} for m in evidence] == \
        [{k: v for k, v in m.items() if k in CONTENT_FIELDS} for m in originals]

    # Never matched again, even with no recent-partner rule.
    assert process(alice.command("find_chat")).outcome == "find:waiting"
    assert process(bob.command("find_chat")).outcome == "find:waiting"


def test_the_last_partner_can_be_reported_for_a_while(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser, clock
):
    pair(bot, alice, bob)
    bot.pipeline.process(bob.command("next"))
    clock.advance(30 * 60)
    assert bot.pipeline.process(alice.command("report")).outcome == "report:asked"
    assert bot.pipeline.process(alice.press_button("Spam")).outcome == "button:report:sent"
    clock.advance(2 * 3600)
    assert bot.pipeline.process(alice.command("report")).outcome == "report:nobody"
    assert bot.pipeline.process(alice.command("report")).status == 200


def test_block_excludes_the_pair(bot: Runtime, alice: FakeUser, bob: FakeUser):
    pair(bot, alice, bob)
    assert bot.pipeline.process(alice.command("block")).outcome == "block:done"
    assert bob.last()["text"].startswith("Chat closed by your partner.\n")
    assert bot.pipeline.process(alice.command("find_chat")).outcome == "find:waiting"
    assert bot.pipeline.process(bob.command("find_chat")).outcome == "find:waiting"


def test_admins_ban_and_unban_and_banned_users_get_one_short_answer(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    admin = fake_api.user(ADMIN, "Admin")
    process = bot.pipeline.process
    pair(bot, alice, bob)
    assert process(admin.command(f"ban {BOB} spamming everyone")).outcome == "admin:ban"
    assert bob.last()["text"] == "You have been banned from Messagine. Reason: spamming everyone"
    assert alice.last()["text"].startswith("Chat closed by your partner.\n")
    fake_api.reset_calls()
    for update in (bob.text("hello?"), bob.command("find_chat"), bob.command("start")):
        assert process(update).outcome == "banned"
    assert [c.params["text"] for c in fake_api.calls] == [
        "You are banned from Messagine. /privacy, /mydata and /deleteme still work."] * 3
    state = bot.repository.get_user(BOB)
    assert state is not None and state.banned and not state.waiting and state.chat is None

    assert process(admin.command(f"detail {BOB}")).outcome == "admin:detail"
    assert "Banned: yes" in admin.last()["text"] and "Chats: 1" in admin.last()["text"]
    assert process(admin.command("stats")).outcome == "admin:stats"
    assert "Users: 3" in admin.last()["text"]
    assert process(admin.command(f"unban {BOB}")).outcome == "admin:unban"
    assert bob.last()["text"].startswith("Your ban has been lifted")
    assert process(bob.command("find_chat")).outcome.startswith("find:")
    assert process(admin.command("ban nobody")).outcome == "admin:usage"
    assert process(admin.command("ban 12345")).outcome == "admin:ban:unknown"


def test_admin_commands_from_others_are_unknown_and_never_relayed(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    pair(bot, alice, bob)
    fake_api.reset_calls()
    for command in (f"ban {BOB}", f"unban {BOB}", f"detail {BOB}", "stats"):
        assert bot.pipeline.process(alice.command(command)).outcome == "unknown_command"
    assert fake_api.calls_of("copyMessage") == []
    assert all(c.chat_id == ALICE for c in fake_api.calls)
    state = bot.repository.get_user(BOB)
    assert state is not None and not state.banned


def test_moderators_ban_or_dismiss_from_the_report(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    carol = fake_api.user(CAROL, "Carol")
    pair(bot, alice, bob)
    bot.pipeline.process(bob.text("offensive"))
    bot.pipeline.process(alice.command("report"))
    bot.pipeline.process(alice.press_button("Something else"))
    report = moderators_chat(fake_api)[0]
    ban_data = report["reply_markup"]["inline_keyboard"][0][0]["callback_data"]

    def press_in_moderators_chat(user: FakeUser) -> dict:
        message = {**report, "chat": {"id": MODERATORS, "type": "supergroup",
                                      "title": "Moderators"}}
        return {"update_id": fake_api.next_update_id(), "callback_query": {
            "id": f"cb{user.id}", "from": user.profile, "message": message,
            "chat_instance": "1", "data": ban_data}}

    assert bot.pipeline.process(press_in_moderators_chat(carol)).outcome == "mod:not_admin"
    moderator_press = press_in_moderators_chat(fake_api.user(ADMIN, "Admin"))
    assert bot.pipeline.process(moderator_press).outcome == "mod:ban"
    state = bot.repository.get_user(BOB)
    assert state is not None and state.banned
    assert "banned by admin" in moderators_chat(fake_api)[0]["text"]
    moderator_press["update_id"] = fake_api.next_update_id()
    assert bot.pipeline.process(moderator_press).outcome == "mod:already_handled"


def test_a_ban_that_failed_half_way_is_carried_out_by_the_redelivery(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser,
    monkeypatch: pytest.MonkeyPatch
):
    """The store fails while the moderator's Ban is carried out (the report taken, Bob's
    ban not yet written): 503, and Telegram's re-delivery of the same press bans Bob and
    takes him out of the lobby. A Dismiss pressed meanwhile, a later press, and the old
    button after an unban, change nothing."""
    pair(bot, alice, bob)
    bot.pipeline.process(bob.text("offensive"))
    bot.pipeline.process(alice.command("report"))
    bot.pipeline.process(alice.press_button("Spam"))
    assert bot.pipeline.process(bob.command("find_chat")).outcome == "find:waiting"
    report = moderators_chat(fake_api)[0]
    admin = fake_api.user(ADMIN, "Admin")

    def press(button: int = 0) -> dict:
        message = {**report, "chat": {"id": MODERATORS, "type": "supergroup"}}
        return {"update_id": fake_api.next_update_id(), "callback_query": {
            "id": "cb-ban", "from": admin.profile, "message": message, "chat_instance": "1",
            "data": report["reply_markup"]["inline_keyboard"][0][button]["callback_data"]}}

    repository = bot.repository
    set_banned = repository.set_banned
    failures = iter([StorageUnavailable("the store went away")])

    def failing_once(user_id: int, banned: bool) -> bool:
        for failure in failures:
            raise failure
        return set_banned(user_id, banned)

    monkeypatch.setattr(repository, "set_banned", failing_once)
    update = press()
    assert bot.pipeline.process(update).status == 503
    # Another moderator's Dismiss meanwhile loses: the Ban has begun.
    assert bot.pipeline.process(press(button=1)).outcome == "mod:already_handled"
    assert bot.pipeline.process(update).outcome == "mod:ban"
    state = repository.get_user(BOB)
    assert state is not None and state.banned and not state.waiting
    assert repository.counts(BOB).waiting == 0
    assert bot.pipeline.process(press()).outcome == "mod:already_handled"
    assert bot.pipeline.process(admin.command(f"unban {BOB}")).outcome == "admin:unban"
    assert bot.pipeline.process(press()).outcome == "mod:already_handled"
    state = repository.get_user(BOB)
    assert state is not None and not state.banned


def test_a_short_429_is_waited_out_and_the_message_sent_once(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    pair(bot, alice, bob)
    fake_api.fail("copyMessage", status=429, retry_after=1)
    assert bot.pipeline.process(alice.text("patience")).outcome == "relayed"
    assert len(fake_api.calls_of("copyMessage")) == 1
    assert bob.last()["text"] == "patience"


def test_a_long_429_answers_503_and_the_redelivery_sends_it_once(
    bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    pair(bot, alice, bob)
    fake_api.fail("copyMessage", status=429, retry_after=60)
    update = alice.text("later")
    result = bot.pipeline.process(update)
    assert (result.status, result.outcome) == (503, "retry:telegram")
    assert fake_api.calls_of("copyMessage") == []
    assert bot.pipeline.process(update).outcome == "relayed"
    assert bot.pipeline.process(update).outcome == "duplicate"
    assert [t for t in bob.texts() if t == "later"] == ["later"]


@pytest.mark.parametrize("typed", [
    f"ban {2**70}", f"detail {2**64}", f"unban {2**63}", "ban -5", "detail 0", "ban x1",
    "ban", "detail 12abc", f"ban {'9' * 40}",
])
def test_admin_commands_with_a_bad_argument_answer_their_usage(
        bot: Runtime, fake_api: FakeBotApi, typed: str):
    admin = fake_api.user(ADMIN, "Admin")
    outcome = bot.pipeline.process(admin.command(typed)).outcome
    assert outcome == "admin:usage", (typed, outcome)
    assert admin.last()["text"].startswith("Usage: /ban <id>")


@pytest.mark.parametrize("data", ["mod:ban:", "mod:ban:x", f"mod:dismiss:{2**70}",
                                  "mod:ban:-1", "mod:dismiss:0", "mod:ban:١"])
def test_a_moderation_button_with_a_bad_number_changes_nothing(
        bot: Runtime, fake_api: FakeBotApi, data: str):
    admin = fake_api.user(ADMIN, "Admin")
    update = {"update_id": fake_api.next_update_id(), "callback_query": {
        "id": "q1", "from": admin.profile, "chat_instance": "1", "data": data,
        "message": {"message_id": 1, "date": 0,
                    "chat": {"id": MODERATORS, "type": "supergroup", "title": "Mods"}}}}
    result = bot.pipeline.process(update)
    assert (result.status, result.outcome) == (200, "mod:malformed")
    assert fake_api.calls_of("answerCallbackQuery")
