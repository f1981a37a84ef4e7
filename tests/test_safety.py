"""Safety at the right moment: the tip when a chat starts, Send before a contact or a
location goes to a stranger, and links held back in a chat's first minutes.

The rules that read storage (which chat a held message belongs to, whether it was relayed
already) run end to end through the HTTP entry point on every backend; the rest in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS, Clock, Deliver, FunctionServer, bot_env
from messagine import envelope, safety
from messagine.catalog import Catalog
from messagine.dev.fake_bot_api import SAMPLE_CONTENT, FakeBotApi, FakeUser
from messagine.runtime import build_runtime
from messagine.settings import Settings, SettingsError

TIP = "never share your phone number, address or passwords with a stranger"
HELD = "Links and usernames are held back in the first 3 minutes of a chat"
LIVE = {"location": {"latitude": -33.868820, "longitude": -151.209296, "live_period": 900}}


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def copies(user: FakeUser) -> list[dict[str, Any]]:
    """The relayed messages in ``user``'s chat: from the bot, with content, not its texts."""
    return [m for m in user.inbox() if "text" not in m]


def shown(user: FakeUser, message_id: int) -> str:
    """What the bot's message ``message_id`` shows now (after any edit)."""
    return str(next(m for m in user.inbox() if m["message_id"] == message_id)["text"])


def url(text: str) -> list[dict[str, Any]]:
    start = text.index("http")
    return [{"type": "url", "offset": start, "length": len(text) - start}]


@pytest.fixture
def pair(fake_api: FakeBotApi, deliver: Deliver) -> tuple[FakeUser, FakeUser]:
    alice, bob = fake_api.user(101, "Alice"), fake_api.user(102, "Bob")
    assert deliver(alice.command("find_chat")).outcome == "find:waiting"
    assert deliver(bob.command("find_chat")).outcome == "find:matched"
    return alice, bob


# -- the tip -----------------------------------------------------------------------------

def test_both_sides_get_the_safety_tip_when_the_chat_starts(pair: tuple[FakeUser, FakeUser]):
    for user in pair:
        started = user.last()["text"]
        assert started.startswith("Chat started") and started.endswith(TIP + ".")
        assert buttons(user.last()) == ["👋 Say Hi", "🚪 Exit Chat"]


# -- links in the first minutes ----------------------------------------------------------

def test_links_and_usernames_wait_out_the_first_minutes(
        pair: tuple[FakeUser, FakeUser], deliver: Deliver, fake_api: FakeBotApi, clock: Clock):
    alice, bob = pair
    before = len(bob.inbox())
    link = "see https://spam.example"
    held = (alice.text(link, entities=url(link)),
            alice.text("write to @someone", entities=[
                {"type": "mention", "offset": 9, "length": 8}]),
            alice.text("my page", entities=[
                {"type": "text_link", "offset": 0, "length": 7, "url": "https://x.example"}]),
            alice.text("ask Sam", entities=[
                {"type": "text_mention", "offset": 4, "length": 3,
                 "user": {"id": 5, "is_bot": False, "first_name": "Sam"}}]),
            alice.send({**SAMPLE_CONTENT["photo"], "caption": "@someone",
                        "caption_entities": [{"type": "mention", "offset": 0, "length": 8}]}))
    for update in held:
        assert deliver(update).outcome == "relay:link_held"
        assert alice.last()["text"].startswith(HELD)
    assert len(bob.inbox()) == before, "nothing held reached the partner"
    assert fake_api.calls_of("copyMessage") == []

    bold = alice.text("hello you", entities=[{"type": "bold", "offset": 0, "length": 5}])
    assert deliver(bold).outcome == "relayed", "other formatting is not held"
    assert deliver(alice.edit(bold["message"]["message_id"], text=link,
                                 entities=url(link))).outcome == \
        "edit:link_held"
    assert bob.last()["text"] == "hello you", "an edit cannot slip a link in"
    assert alice.last()["text"].endswith("so this edit did not reach your partner.")

    clock.advance(179)
    assert deliver(alice.text(link, entities=url(link))).outcome == "relay:link_held"
    clock.advance(1)
    after = alice.text(link, entities=url(link))
    assert deliver(after).outcome == "relayed"
    assert bob.last()["text"] == link and bob.last()["entities"] == url(link)


def test_hold_links_minutes_zero_turns_the_rule_off(fake_api: FakeBotApi, tmp_path: Path,
                                                      clock: Clock):
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "b.sqlite3",
                                         HOLD_LINKS_MINUTES="0"))
    deliver = build_runtime(settings, clock=clock).pipeline.process
    alice, bob = fake_api.user(201, "Alice"), fake_api.user(202, "Bob")
    deliver(alice.command("find_chat"))
    deliver(bob.command("find_chat"))
    link = "https://example.org"
    assert deliver(alice.text(link, entities=url(link))).outcome == "relayed"
    assert bob.last()["text"] == link


def test_the_hold_setting_is_read_and_checked():
    base = {"TELEGRAM_TOKEN": "123456:" + "a" * 30}
    assert Settings.from_env(base).hold_links_minutes == 3
    assert Settings.from_env({**base, "HOLD_LINKS_MINUTES": "10"}).hold_links_minutes == 10
    with pytest.raises(SettingsError, match="HOLD_LINKS_MINUTES"):
        Settings.from_env({**base, "HOLD_LINKS_MINUTES": "-1"})
    english = Catalog().for_language("en")
    assert english.plural("relay.links_held", 1).startswith(
        "Links and usernames are held back in the first minute of a chat")
    assert english.plural("relay.links_held", 10).startswith(
        "Links and usernames are held back in the first 10 minutes of a chat")


def test_the_envelope_reads_entities_of_text_and_caption():
    message = {"message_id": 1, "chat": {"id": 5, "type": "private"}, "caption": "x",
               "entities": [{"type": "bold"}, {"no": "type"}, "junk"],
               "caption_entities": [{"type": "url"}]}
    read = envelope.read(message)
    assert read.entities == ("bold", "url") and read.has_link
    assert not envelope.read({**message, "caption_entities": None}).has_link


# -- the Send button's data --------------------------------------------------------------

def test_the_send_button_carries_what_it_needs_within_telegrams_limit():
    chat_id = 2**62 - 1  # MongoDB's chat ids are random 62-bit numbers
    live = envelope.read({"message_id": 2**31 - 1, "chat": {"id": 5, "type": "private"},
                          "location": {"latitude": -89.123456, "longitude": -179.654321,
                                       "live_period": 0x7FFFFFFF, "heading": 360,
                                       "horizontal_accuracy": 1500.0,
                                       "proximity_alert_radius": 100_000}})
    data = "share=" + safety.pack(live, chat_id)
    assert len(data.encode()) <= safety.MAX_CALLBACK_DATA
    held = safety.unpack(data.removeprefix("share="))
    assert held is not None and (held.chat_id, held.message_id, held.content_type) == (
        chat_id, 2**31 - 1, "location")
    assert held.live_location is not None
    assert held.live_location == live.location, "nothing of the live location is lost"
    contact = envelope.read({"message_id": 7, "chat": {"id": 5, "type": "private"},
                             "contact": {"phone_number": "1", "first_name": "S"}})
    assert safety.unpack(safety.pack(contact, 3)) == safety.HeldShare(3, 7, "contact")
    for junk in ("", "x.1.2", "c.1", "c.1.2.3", "c.zz!.1", "L.1.2", "L.1.2.3.4.5"):
        assert safety.unpack(junk) is None, junk


# -- Send before a contact or a location: on every backend, through HTTP ------------------

pytest_http = pytest.mark.parametrize("served", BACKENDS, indirect=True)


def _pair_over_http(server: FunctionServer, api: FakeBotApi, base: int
                    ) -> tuple[FakeUser, FakeUser]:
    alice, bob = api.user(base + 1, "Alice"), api.user(base + 2, "Bob")
    for user in (alice, bob):
        assert server.post(user.command("find_chat")).status_code == 200
    assert bob.last()["text"].startswith("Chat started")
    return alice, bob


@pytest.mark.slow
@pytest_http
def test_a_location_or_a_contact_goes_only_after_send(function_server: FunctionServer,
                                                      served_api: FakeBotApi):
    post = function_server.post
    base = 9_100_000 + len(served_api.calls) * 10
    alice, bob = _pair_over_http(function_server, served_api, base)
    carol = served_api.user(base + 3, "Carol")

    # A location waits; Send relays it, once, however often it is pressed.
    location = alice.media("location")
    assert post(location).status_code == 200
    prompt = alice.last()
    assert prompt["text"] == "This shares an exact location with a stranger. Send it?"
    assert prompt["reply_to_message"]["message_id"] == location["message"]["message_id"]
    assert buttons(prompt) == ["📤 Send", "✋ Don't send"]
    assert copies(bob) == []
    send = alice.press_button("Send")
    data = send["callback_query"]["data"]
    assert post(send).status_code == 200
    assert [c["location"] for c in copies(bob)] == [location["message"]["location"]]
    assert alice.last()["text"] == "Sent to your partner." and buttons(alice.last()) == []
    assert post(alice.press(prompt["message_id"], data)).status_code == 200
    assert len(copies(bob)) == 1, "a second press relays nothing more"

    # Don't send: nothing goes, and the prompt says so.
    assert post(alice.media("contact")).status_code == 200
    assert alice.last()["text"] == "This shares a phone number with a stranger. Send it?"
    assert post(alice.press_button("Don't send")).status_code == 200
    assert alice.last()["text"] == "Not sent: your partner did not get it."
    assert len(copies(bob)) == 1

    # A live location, once sent, is live on the other side and follows its moves.
    live = alice.send(LIVE)
    post(live)
    assert "live location" in alice.last()["text"]
    post(alice.press_button("Send"))
    live_copy = copies(bob)[-1]
    assert live_copy["location"]["live_period"] == 900
    assert live_copy["location"] == LIVE["location"]

    # A prompt answered after the chat ended, or in a later chat, relays nothing.
    venue = alice.media("venue")
    post(venue)
    stale = alice.last()
    stale_data = next(b["callback_data"] for row in stale["reply_markup"]["inline_keyboard"]
                      for b in row if "Send" in b["text"])
    post(alice.command("exit_chat"))
    post(alice.press_button("Yes"))
    assert post(alice.press(stale["message_id"], stale_data)).status_code == 200
    # The card came after the prompt: the answer is at the bottom, the prompt's buttons go.
    assert alice.last()["text"] == "This chat has ended, so it was not sent."
    assert buttons(next(m for m in alice.inbox() if m["message_id"] == stale["message_id"])) \
        == []
    post(carol.command("find_chat"))
    post(alice.command("find_chat"))
    assert carol.last()["text"].startswith("Chat started")
    assert post(alice.press(stale["message_id"], stale_data)).status_code == 200
    assert alice.last()["text"] == "This chat has ended, so it was not sent."
    assert copies(carol) == []
    assert len(copies(bob)) == 2
    assert served_api.calls_of("copyMessage", carol.id) == []


@pytest.mark.slow
@pytest_http
def test_links_are_held_on_every_backend(function_server: FunctionServer,
                                         served_api: FakeBotApi):
    base = 9_200_000 + len(served_api.calls) * 10
    alice, bob = _pair_over_http(function_server, served_api, base)
    link = "https://spam.example"
    assert function_server.post(alice.text(link, entities=url(link))).status_code == 200
    assert alice.last()["text"].startswith(HELD)
    assert bob.last()["text"].startswith("Chat started")
    assert "outcome=relay:link_held" in function_server.log()
