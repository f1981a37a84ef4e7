"""The rules of the lobby and of chats, with the bot in this process.

Real SQLite and the real fake Bot API over HTTP; only the HTTP entry point is skipped
(its own tests cover it), which keeps these fast and lets them inject failures.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import Clock, Deliver, bot_env
from messagine.catalog import Catalog
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.domain.claims import LEASE_S
from messagine.models import EndReason, Profile
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.sqlite import SqliteRepository


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def pair(deliver: Deliver, a: FakeUser, b: FakeUser) -> None:
    assert deliver(a.command("find_chat")).outcome == "find:waiting"
    assert deliver(b.command("find_chat")).outcome == "find:matched"


@pytest.fixture
def alice(fake_api: FakeBotApi) -> FakeUser:
    return fake_api.user(101, "Alice")


@pytest.fixture
def bob(fake_api: FakeBotApi) -> FakeUser:
    return fake_api.user(102, "Bob")


def test_next_ends_the_chat_and_searches_again(deliver: Deliver, fake_api: FakeBotApi,
                                               alice: FakeUser, bob: FakeUser):
    carol = fake_api.user(103, "Carol")
    deliver(carol.command("find_chat"))
    assert deliver(alice.command("find_chat")).outcome == "find:matched"  # with Carol
    deliver(bob.command("find_chat"))
    assert deliver(alice.command("next")).outcome == "next:ended+matched"  # now with Bob
    assert carol.last()["text"].startswith("Chat closed by your partner.\n")
    assert bob.last()["text"].startswith("Chat started")
    assert deliver(carol.command("next")).outcome == "next:waiting"


def test_both_confirming_exit_ends_the_chat_once(deliver: Deliver, alice: FakeUser,
                                                 bob: FakeUser):
    pair(deliver, alice, bob)
    deliver(alice.command("exit_chat"))
    deliver(bob.command("exit_chat"))
    alice_yes, bob_yes = alice.press_button("Yes"), bob.press_button("Yes")
    bob_confirmation = bob_yes["callback_query"]["message"]["message_id"]
    assert deliver(alice_yes).outcome == "button:exit:closed"
    assert deliver(bob_yes).outcome == "button:exit:already_ended"
    assert [t.split("\n")[0] for t in bob.texts() if "closed" in t] == \
        ["Chat closed by your partner."]
    # The card came after Bob's question, so the answer is a new message at the bottom
    # and the question's buttons retire.
    confirmation = next(m for m in bob.inbox() if m["message_id"] == bob_confirmation)
    assert "reply_markup" not in confirmation or \
        confirmation["reply_markup"]["inline_keyboard"] == []
    assert bob.last()["text"] == "This chat has already ended."
    assert [t.split("\n")[0] for t in alice.texts() if "closed" in t] == \
        ["You have closed the chat."]


def test_exit_outside_a_chat_says_why(deliver: Deliver, alice: FakeUser):
    deliver(alice.command("exit_chat"))
    assert alice.last()["text"].startswith("You have no chat right now")
    deliver(alice.command("find_chat"))
    deliver(alice.command("end"))
    assert "we are still searching" in alice.last()["text"]


def test_help_shows_the_button_for_the_state(deliver: Deliver, alice: FakeUser, bob: FakeUser):
    deliver(alice.command("help"))
    assert buttons(alice.last())[0] == "🔍 Find Chat"
    assert "/find_chat" in alice.last()["text"]
    deliver(alice.command("find_chat"))
    deliver(alice.command("help"))
    assert buttons(alice.last())[0] == "🚪 Stop searching"
    deliver(bob.command("find_chat"))
    deliver(alice.command("help"))
    assert buttons(alice.last()) == ["🚪 Exit Chat", "🌐 Language", "ℹ️ About"]


def test_a_known_user_is_welcomed_back(deliver: Deliver, alice: FakeUser):
    assert deliver(alice.command("start")).outcome == "start:new"
    assert deliver(alice.command("start")).outcome == "start:known"
    assert alice.last()["text"] == "Welcome back! 👋"
    assert buttons(alice.last()) == ["🔍 Find Chat", "❓ Help"]


def test_the_language_comes_from_telegram_when_supported(deliver: Deliver, fake_api: FakeBotApi):
    deliver(fake_api.user(201, "Ana", language_code="pt-br").command("start"))
    assert "Português" in fake_api.user(201).last()["text"]
    deliver(fake_api.user(202, "X", language_code="xx").command("start"))
    assert "English" in fake_api.user(202).last()["text"]
    deliver(fake_api.user(203, "Y", language_code=None).command("start"))
    assert "English" in fake_api.user(203).last()["text"]


def test_the_language_picker_toggles_and_moves_the_lobby_entry(
    deliver: Deliver, fake_api: FakeBotApi, alice: FakeUser
):
    hans = fake_api.user(301, "Hans", language_code="de")
    deliver(hans.command("find_chat"))
    deliver(alice.command("find_chat"))
    deliver(alice.command("set_language"))
    picker = alice.last()
    assert len(buttons(picker)) == 11 and buttons(picker)[0] == "✓ English"
    deliver(alice.press_button("All >>"))
    assert len(buttons(alice.last())) == 57
    assert alice.last()["message_id"] == picker["message_id"], "toggled in place"
    deliver(alice.press_button("<< Top 10"))
    assert len(buttons(alice.last())) == 11
    outcome = deliver(alice.press_button("Deutsch")).outcome
    assert outcome == "button:language:set+matched", "a waiting user is matched in the new pool"
    assert any(t == "Deine Sprache ist jetzt Deutsch." for t in alice.texts()), \
        "the interface switches to the new language"
    assert hans.last()["text"].startswith("Der Chat hat begonnen")
    deliver(alice.command("set_language"))
    assert "Während eines Chats" in alice.last()["text"]


def test_messages_outside_a_chat_get_an_answer(deliver: Deliver, alice: FakeUser):
    assert deliver(alice.text("anyone?")).outcome == "relay:not_in_chat"
    assert "not in a chat" in alice.last()["text"]
    deliver(alice.command("find_chat"))
    deliver(alice.media("sticker"))
    assert "still searching" in alice.last()["text"]
    assert deliver(alice.command("frobnicate")).outcome == "unknown_command"
    assert "/help" in alice.last()["text"]


def test_unknown_commands_in_a_chat_are_relayed_as_text(deliver: Deliver, alice: FakeUser,
                                                        bob: FakeUser):
    pair(deliver, alice, bob)
    assert deliver(alice.command("shrug")).outcome == "relayed"
    assert bob.last()["text"] == "/shrug"


def test_content_that_cannot_be_relayed_is_answered(deliver: Deliver, alice: FakeUser,
                                                    bob: FakeUser):
    pair(deliver, alice, bob)
    game = {"game": {"title": "Lumberjack", "description": "Chop",
                     "photo": [{"file_id": "g", "file_unique_id": "g", "width": 1, "height": 1}]}}
    assert deliver(alice.send(game)).outcome == "relay:not_copyable:game"
    assert alice.last()["text"] == "This kind of message can't be sent in a chat."


def test_a_partner_who_blocked_the_bot_ends_the_chat(deliver: Deliver, fake_api: FakeBotApi,
                                                     bot: Runtime, alice: FakeUser,
                                                     bob: FakeUser):
    pair(deliver, alice, bob)
    fake_api.blocked.add(bob.id)
    assert deliver(alice.text("still there?")).outcome == "relay:partner_unreachable"
    assert alice.last()["text"].startswith("Your partner has left Messagine")
    assert buttons(alice.last()) == ["👍", "👎", "🚩 Report", "▶️ Next chat"], "the card"
    state = bot.repository.get_user(bob.id)
    assert state is not None and state.blocked and state.chat is None


def test_a_copy_telegram_refuses_is_reported_to_the_sender(deliver: Deliver, fake_api: FakeBotApi,
                                                          alice: FakeUser, bob: FakeUser):
    pair(deliver, alice, bob)
    fake_api.fail("copyMessage", status=400, description="Bad Request: message can't be copied")
    assert deliver(alice.media("poll")).outcome == "relay:not_copyable:poll"
    assert alice.last()["text"] == "This kind of message can't be sent in a chat."
    fake_api.clear_failures()
    fake_api.fail("copyMessage", status=400, description="Bad Request: MEDIA_EMPTY")
    assert deliver(alice.media("photo")).outcome == "relay:rejected"
    assert "did not get it" in alice.last()["text"]
    fake_api.clear_failures()
    assert deliver(alice.text("and this?")).outcome == "relayed"


def test_a_waiting_partner_who_blocked_the_bot_is_skipped(deliver: Deliver, fake_api: FakeBotApi,
                                                          alice: FakeUser, bob: FakeUser):
    carol = fake_api.user(103, "Carol")
    deliver(bob.command("find_chat"))
    fake_api.blocked.add(bob.id)
    assert deliver(alice.command("find_chat")).outcome == "find:waiting"
    assert deliver(carol.command("find_chat")).outcome == "find:matched"
    assert alice.last()["text"].startswith("Chat started")


def test_a_failed_chat_start_notice_is_sent_again_on_redelivery(
    deliver: Deliver, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    deliver(alice.command("find_chat"))
    fake_api.fail("sendMessage", chat_id=alice.id, status=500)
    search = bob.command("find_chat")
    assert deliver(search).status == 503
    assert deliver(search).outcome == "find:matched", "the re-delivery resumes the same chat"
    assert alice.last()["text"].startswith("Chat started")
    assert bob.last()["text"].startswith("Chat started")


def test_a_failed_exit_notice_is_sent_again_on_redelivery(
    deliver: Deliver, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    pair(deliver, alice, bob)
    deliver(alice.command("exit_chat"))
    press = alice.press_button("Yes")
    fake_api.fail("sendMessage", chat_id=bob.id, status=502)
    assert deliver(press).status == 503
    assert deliver(press).outcome == "button:exit:closed"
    assert bob.last()["text"].startswith("Chat closed by your partner.\n")


def test_edits_and_deletes_outside_the_chat_are_not_delivered(
    deliver: Deliver, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser
):
    pair(deliver, alice, bob)
    hello = alice.text("hello")
    deliver(hello)
    deliver(alice.command("next"))
    fake_api.reset_calls()
    message_id = hello["message"]["message_id"]
    assert deliver(alice.edit(message_id, text="changed")).outcome == "edit:not_in_chat"
    assert deliver(alice.command("delete", reply_to=message_id)).outcome == "delete:not_found"
    assert fake_api.calls_of("editMessageText") == []
    assert fake_api.calls_of("deleteMessage") == []
    assert deliver(alice.command("delete")).outcome == "delete:how"


def test_delete_refuses_the_partners_messages(deliver: Deliver, fake_api: FakeBotApi,
                                              alice: FakeUser, bob: FakeUser):
    pair(deliver, alice, bob)
    deliver(bob.text("mine"))
    copy_id = alice.last()["message_id"]
    assert deliver(alice.command("delete", reply_to=copy_id)).outcome == "delete:not_found"
    assert fake_api.calls_of("deleteMessage") == []
    assert alice.last()["text"].startswith("That message can't be deleted")


def test_an_unreachable_store_answers_503_and_releases_nothing_half_done(
    fake_api: FakeBotApi, tmp_path: Path, alice: FakeUser
):
    path = tmp_path / "locked.sqlite3"
    settings = Settings.from_env(bot_env(fake_api, path))
    runtime = build_runtime(settings, repository=SqliteRepository(path, busy_timeout_s=0.05))
    runtime.repository.get_user(1)  # creates the schema
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    update = alice.command("find_chat")
    result = runtime.pipeline.process(update)
    assert (result.status, result.outcome) == (503, "retry:storage")
    assert fake_api.calls == []
    holder.execute("ROLLBACK")
    assert runtime.pipeline.process(update).outcome == "find:waiting"


def test_an_unexpected_error_apologises_and_answers_200(
    bot: Runtime, deliver: Deliver, monkeypatch: pytest.MonkeyPatch, alice: FakeUser
):
    def broken(*_args: object) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(bot.repository, "counts", broken)
    result = deliver(alice.command("about"))
    assert (result.status, result.outcome) == (200, "error")
    assert alice.last()["text"].startswith("Sorry, something went wrong on our side")
    assert "error_occurred" not in alice.last()["text"]


def test_a_hanging_bot_api_is_cut_off_by_the_client_timeout(
    fake_api: FakeBotApi, tmp_path: Path, alice: FakeUser, bob: FakeUser
):
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "hang.sqlite3",
                                         TELEGRAM_TIMEOUT_SECONDS="2"))
    runtime = build_runtime(settings)
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        runtime.pipeline.process(update)
    # The fake would answer after 60 s (Telegram's own patience); only the client's 2 s
    # read timeout can end the wait, so a 503 proves the request answers within it.
    fake_api.fail("copyMessage", status=200, delay=60)
    update = alice.text("are you there?")
    result = runtime.pipeline.process(update)
    assert (result.status, result.outcome) == (503, "retry:telegram")
    fake_api.clear_failures()
    assert runtime.pipeline.process(update).outcome == "relayed", "the claim was released"


class ClaimFailsOnce(SqliteRepository):
    """The next claim fails once: before it is written, or after (its answer lost)."""

    failure: tuple[Exception, bool] | None = None  # (the error, raised after the write)

    def open_update(self, *args: Any, **kwargs: Any) -> Any:
        failure, self.failure = self.failure, None
        if failure is not None and not failure[1]:
            raise failure[0]
        opened = super().open_update(*args, **kwargs)
        if failure is not None:
            raise failure[0]
        return opened


def relay_after_a_failed_claim(fake_api: FakeBotApi, tmp_path: Path, alice: FakeUser,
                               bob: FakeUser, error: Exception, after_write: bool) -> None:
    """The claim of Alice's text fails once: 503, and Telegram's re-delivery relays it."""
    path = tmp_path / "claim.sqlite3"
    repository = ClaimFailsOnce(path)
    runtime = build_runtime(Settings.from_env(bot_env(fake_api, path)), repository=repository)
    pair(runtime.pipeline.process, alice, bob)
    update = alice.text("relayed after a failed claim")
    repository.failure = (error, after_write)
    result = runtime.pipeline.process(update)
    assert (result.status, result.outcome) == (503, "retry:storage")
    assert runtime.pipeline.process(update).outcome == "relayed", "Telegram's re-delivery"
    assert list(bob.texts()).count("relayed after a failed claim") == 1


def test_a_claim_stored_before_its_answer_was_lost_does_not_swallow_the_redelivery(
        fake_api: FakeBotApi, tmp_path: Path, alice: FakeUser, bob: FakeUser):
    from messagine.storage.port import StorageUnavailable

    relay_after_a_failed_claim(fake_api, tmp_path, alice, bob,
                               StorageUnavailable("answer lost after the write"), True)


def claim_of_a_dead_attempt(bot: Runtime, clock: Clock, update: dict[str, Any],
                            user: FakeUser) -> None:
    """The claim an attempt left when its instance was killed, its lease now over."""
    opened = bot.repository.open_update(
        update["update_id"], Profile(user.id, "Dead", None, None, "en"), "en",
        clock.now - LEASE_S - 1, owner="the dead attempt")
    assert not opened.duplicate and not opened.busy  # it got no further than this


def test_a_message_claimed_by_an_attempt_that_died_is_relayed_on_redelivery(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    """An instance killed after the claim and before the copy: Telegram re-delivers."""
    deliver = bot.pipeline.process
    pair(deliver, alice, bob)
    update = alice.text("the instance died before copying me")
    claim_of_a_dead_attempt(bot, clock, update, alice)
    assert deliver(update).outcome == "relayed"
    assert deliver(update).outcome == "duplicate", "now it is done: never twice"
    assert list(bob.texts()).count("the instance died before copying me") == 1


def test_a_message_whose_dead_attempt_copied_nothing_after_its_chat_ended_is_answered(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    """The attempt died (or failed, and could not give its claim back); Bob left before
    the re-delivery. Alice's text is not taken as done: she is answered, not left thinking
    it arrived."""
    deliver = bot.pipeline.process
    pair(deliver, alice, bob)
    update = alice.text("did this arrive?")
    claim_of_a_dead_attempt(bot, clock, update, alice)
    deliver(bob.command("exit_chat"))
    deliver(bob.press_button("Yes"))
    fake_api.reset_calls()
    assert deliver(update).outcome != "duplicate"
    t = Catalog().for_language("en")
    assert alice.last()["text"] in {t("relay.chat_ended"), t("relay.idle")}, \
        "Alice was not told her text reached nobody"
    assert "did this arrive?" not in bob.texts()


def test_a_message_whose_dead_attempt_had_copied_it_is_not_copied_again(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    deliver = bot.pipeline.process
    pair(deliver, alice, bob)
    update = alice.text("copied, then the instance died")
    assert deliver(update).outcome == "relayed"
    claim_of_a_dead_attempt(bot, clock, alice.text("another"), alice)  # unrelated
    bot.repository.release_update(update["update_id"])
    claim_of_a_dead_attempt(bot, clock, update, alice)  # died after the copy and link
    assert deliver(update).outcome == "duplicate", "its link exists: relayed already"
    assert list(bob.texts()).count("copied, then the instance died") == 1


def test_a_command_claimed_by_an_attempt_that_died_runs_on_redelivery(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    deliver = bot.pipeline.process
    deliver(alice.command("start"))
    search = alice.command("find_chat")
    claim_of_a_dead_attempt(bot, clock, search, alice)
    assert deliver(search).outcome == "find:waiting"
    state = bot.repository.get_user(alice.id)
    assert state is not None and state.waiting
    # A finished update's re-delivery is a duplicate: a command is not run twice.
    assert deliver(search).outcome == "duplicate"
    assert deliver(bob.command("find_chat")).outcome == "find:matched"
    press = alice.press_button("Exit Chat")
    assert deliver(press).outcome != "duplicate"
    assert deliver(press).outcome == "duplicate"


def test_a_press_that_resumes_runs_again_when_its_attempt_died(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    """Yes under "end the chat?", claimed by an attempt that died after ending the chat and
    before telling anyone: the re-delivery resumes the ending by its update id and tells
    both, once. A press whose route does not resume (No) is taken as done."""
    deliver = bot.pipeline.process
    pair(deliver, alice, bob)
    deliver(alice.command("exit_chat"))
    keep = alice.press_button("No")
    claim_of_a_dead_attempt(bot, clock, keep, alice)
    assert deliver(keep).outcome == "duplicate"
    yes = alice.press_button("Yes")
    claim_of_a_dead_attempt(bot, clock, yes, alice)
    # The dead attempt had ended the chat in the store, and died before telling anyone.
    fake_api.reset_calls()
    assert bot.repository.end_chat(alice.id, EndReason.EXIT, clock.now, yes["update_id"])
    assert fake_api.calls_of("sendMessage", bob.id) == []
    assert deliver(yes).outcome == "button:exit:closed"
    for user in (alice, bob):
        state = bot.repository.get_user(user.id)
        assert state is not None and state.chat is None
    assert bob.last()["text"].startswith("Chat closed by your partner.")
    assert deliver(yes).outcome == "duplicate", "done now: never twice"


def test_a_redelivery_during_the_first_attempt_is_503_and_then_a_duplicate(
        bot: Runtime, fake_api: FakeBotApi, clock: Clock, alice: FakeUser, bob: FakeUser):
    deliver = bot.pipeline.process
    pair(deliver, alice, bob)
    update = alice.text("the first attempt is still running")
    bot.repository.open_update(update["update_id"], Profile(alice.id, "A", None, None, "en"),
                               "en", clock.now, owner="still running")
    result = deliver(update)
    assert (result.status, result.outcome) == (503, "retry:in_progress")
    assert fake_api.calls_of("copyMessage") == []
    bot.repository.finish_update(update["update_id"], alice.id, "still running")
    assert deliver(update).outcome == "duplicate"
    for command in ("help", "mydata"):  # a command answered once is never answered twice
        sent = alice.command(command)
        deliver(sent)
        before = len(fake_api.calls)
        assert deliver(sent).outcome == "duplicate"
        assert len(fake_api.calls) == before


def test_an_error_the_store_gives_while_claiming_is_retried_not_a_crash(
        fake_api: FakeBotApi, tmp_path: Path, alice: FakeUser, bob: FakeUser,
        caplog: pytest.LogCaptureFixture):
    relay_after_a_failed_claim(fake_api, tmp_path, alice, bob,
                               RuntimeError("an error no adapter maps"), False)
    assert any(r.exc_info for r in caplog.records), "an unknown error is logged with its trace"


def test_a_copy_whose_link_cannot_be_written_still_counts_as_relayed(
        bot: Runtime, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser,
        monkeypatch: pytest.MonkeyPatch):
    pair(bot.pipeline.process, alice, bob)

    def broken(link: Any) -> None:
        raise RuntimeError("the store refused the link")

    monkeypatch.setattr(bot.repository, "record_message", broken)
    assert bot.pipeline.process(alice.text("delivered anyway")).outcome == "relayed"
    assert list(bob.texts()).count("delivered anyway") == 1
    assert "went wrong" not in alice.last()["text"], "no apology for a delivered message"


def test_a_redelivered_next_keeps_the_chat_its_first_attempt_made(
        deliver: Deliver, fake_api: FakeBotApi, alice: FakeUser, bob: FakeUser):
    carol = fake_api.user(103, "Carol")
    pair(deliver, alice, bob)
    assert deliver(carol.command("find_chat")).outcome == "find:waiting"
    # The first attempt ends Alice's chat with Bob and pairs her with Carol, then telling
    # Carol fails: 503, and Telegram re-delivers the same /next.
    fake_api.fail("sendMessage", chat_id=carol.id, status=500)
    update = alice.command("next")
    assert deliver(update).status == 503
    assert deliver(update).outcome == "next:ended+matched"
    assert carol.last()["text"].startswith("Chat started")
    assert not any("closed" in t.lower() for t in carol.texts()), \
        "Carol's new chat was not ended by the re-delivery"
    deliver(alice.text("hello Carol"))
    assert "hello Carol" in list(carol.texts())


def test_a_reply_quotes_its_message_as_edited(deliver: Deliver, alice: FakeUser, bob: FakeUser):
    """The fake Bot API shows a quote as a client does: the quoted message as it is now."""
    pair(deliver, alice, bob)
    hello = alice.text("Hello")
    deliver(hello)
    deliver(bob.text("Hi", reply_to=bob.last()["message_id"]))
    deliver(alice.edit(hello["message"]["message_id"], text="Hello, edited"))
    bob_reply = next(m for m in bob.api.messages(bob.id) if m.get("text") == "Hi")
    assert bob_reply["reply_to_message"]["text"] == "Hello, edited"
    assert alice.last()["reply_to_message"]["text"] == "Hello, edited"


def test_the_sandbox_marks_links_and_usernames_as_telegram_does():
    from messagine.dev.sandbox import _entities

    assert _entities("😀 see https://x.org, t.me/abc and @someone but not @ab or a@b.c") == [
        {"type": "url", "offset": 7, "length": 13},
        {"type": "url", "offset": 22, "length": 8},
        {"type": "mention", "offset": 35, "length": 8}]
