"""The sample corpus: real update shapes, old, new and partial, through the HTTP entry point.

tests/samples/messages/ holds updates in the shapes Telegram sends (from the Bot API's
documentation and recordings): content pyTelegramBotAPI does not know, nested fields it
rejects, content Telegram refuses to copy, service messages, live locations, an inline
button press. Each runs twice on every backend: as-is (from a user in no chat), and again
sent by a user in a chat, where every message with content is either relayed to the
partner or answered to the sender, never both and never neither; only a service message
nobody typed stays silent, with its type in the log line.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.envelope import SILENT_SERVICE, content_type

SAMPLES = Path(__file__).parent / "samples" / "messages"
on_every_backend = pytest.mark.parametrize("served", BACKENDS, indirect=True)

_META = ("message_id", "from", "chat", "date", "edit_date", "reply_to_message")


def load(name: str) -> dict[str, Any]:
    update: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    update.pop("_note", None)  # the corpus's own comment; Telegram sends no such field
    return update


MESSAGES = sorted(p.stem for p in SAMPLES.glob("*.json") if "message" in load(p.stem))
EVERYTHING = sorted(p.stem for p in SAMPLES.glob("*.json"))


def test_the_corpus_covers_what_the_library_cannot():
    kinds = {content_type(load(name)["message"]) for name in MESSAGES}
    assert {"paid_media", "checklist", "gift", "refunded_payment", "live_photo", "unknown"} \
        - kinds <= {"unknown"}, kinds
    assert len(EVERYTHING) >= 25


@pytest.mark.slow
@on_every_backend
def test_every_sample_as_is(function_server: FunctionServer, served_api: FakeBotApi):
    for name in EVERYTHING:
        update = load(name)
        served_api.reset_calls()
        response = function_server.post(update)
        assert response.status_code == 200, name
        item = update.get("message") or update.get("edited_message") or update["callback_query"]
        sender = item["from"]["id"]
        strangers = [c for c in served_api.calls if c.chat_id not in (None, sender)]
        assert strangers == [], (name, strangers)
        if "callback_query" in update:
            assert served_api.calls_of("answerCallbackQuery"), "every press is answered"


def _pair(server: FunctionServer, api: FakeBotApi, base: int) -> tuple[FakeUser, FakeUser]:
    alice, bob = api.user(base + 1, "Alice"), api.user(base + 2, "Bob")
    for user in (alice, bob):
        assert server.post(user.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in alice.texts())
    return alice, bob


def _as(user: FakeUser, sample: dict[str, Any], reply_to: int) -> dict[str, Any]:
    """The sample's message, sent by ``user`` (known to the fake Bot API, so copyable)."""
    original = sample["message"]
    content = {k: copy.deepcopy(v) for k, v in original.items() if k not in _META}
    update = user.send(content)
    if "reply_to_message" in original:  # keep the partial shape of the quoted message
        quoted = copy.deepcopy(original["reply_to_message"])
        quoted.update(message_id=reply_to, chat=user.chat)
        quoted["from"]["id"] = user.id
        update["message"]["reply_to_message"] = quoted
    return update


@pytest.mark.slow
@on_every_backend
@pytest.mark.parametrize("name", MESSAGES)
def test_every_sample_from_a_user_in_a_chat_is_relayed_or_answered(
        function_server: FunctionServer, served_api: FakeBotApi, name: str):
    base = 9_500_000 + 10 * MESSAGES.index(name)
    alice, bob = _pair(function_server, served_api, base)
    first = function_server.post(alice.text("hello")).status_code
    assert first == 200
    earlier = served_api.messages(alice.id)[-1]["message_id"]
    sample = load(name)
    before_alice, before_bob = len(served_api.messages(alice.id)), len(served_api.messages(bob.id))
    function_server.mark_log()
    update = _as(alice, sample, earlier)
    assert function_server.post(update).status_code == 200
    if "media_group_id" in sample["message"]:  # an album item goes a moment later, whole
        deadline = time.monotonic() + 15
        while len(served_api.messages(bob.id)) == before_bob and time.monotonic() < deadline:
            time.sleep(0.1)
    got_alice = served_api.messages(alice.id)[before_alice + 1:]  # +1: her own message
    got_bob = served_api.messages(bob.id)[before_bob:]
    kind = content_type(sample["message"])
    if kind in SILENT_SERVICE:
        assert got_alice == [] and got_bob == []
        assert f"outcome=ignored:service:{kind}" in function_server.log()
        return
    relayed, answered = len(got_bob) == 1, len(got_alice) == 1
    assert relayed != answered, (name, got_alice, got_bob)
    assert len(got_alice) + len(got_bob) == 1
    if answered:
        # Or held back: a contact or a location waits for Send, a link for the first
        # minutes of the chat to pass (tests/test_safety.py).
        assert got_alice[0]["text"] in (
            "This kind of message can't be sent in a chat.",
            "Telegram did not accept this message, so your partner did not get it.",
            "This shares an exact location with a stranger. Send it?",
            "This shares a phone number with a stranger. Send it?",
            ("This shares your live location with a stranger: it follows you as you move. "
             "Send it?")) or got_alice[0]["text"].startswith(
                "Links and usernames are held back"), (name, got_alice[0]["text"])
    else:
        copied = got_bob[0]
        assert "from" in copied and copied["from"]["id"] == served_api.bot_user["id"]
        assert not any(key.startswith("forward") for key in copied)
        if "reply_to_message" in sample["message"]:
            assert copied["reply_to_message"]["message_id"] == \
                served_api.messages(bob.id)[before_bob - 1]["message_id"]


@pytest.mark.slow
@on_every_backend
def test_a_live_location_stays_live_on_the_copy(function_server: FunctionServer,
                                                 served_api: FakeBotApi):
    alice, bob = _pair(function_server, served_api, 9_800_000)
    start = _as(alice, load("live_location_start"), 0)
    assert function_server.post(start).status_code == 200
    assert function_server.post(alice.press_button("Send")).status_code == 200
    copy_ = served_api.messages(bob.id)[-1]
    assert copy_["location"]["live_period"] == 900
    assert copy_["location"]["heading"] == 90
    original = start["message"]
    for name, expected in (("edited_live_location_moved", 52.521),
                           ("edited_live_location_stopped", None)):
        edited = load(name)["edited_message"]
        moved = {**original, "location": edited["location"], "edit_date": edited["edit_date"]}
        update = {"update_id": served_api.next_update_id(), "edited_message": moved}
        function_server.mark_log()
        assert function_server.post(update).status_code == 200
        location = served_api.messages(bob.id)[-1]["location"]
        if expected is None:
            assert location.get("stopped") is True
            assert "outcome=edit:live_location_stopped" in function_server.log()
        else:
            assert location["latitude"] == expected
            assert location["heading"] == 95
            assert "outcome=edit:live_location_moved" in function_server.log()
