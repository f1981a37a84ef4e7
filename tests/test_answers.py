"""Answers where the user is looking: a button on the newest message of the chat is answered
in place; one further up is answered at the bottom, and its old buttons retire.

Which message is newest comes from the store (the bot's texts noted per user, the message
log for the chat's messages), so these run through the HTTP entry point on every backend.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser

pytestmark = pytest.mark.parametrize("served", BACKENDS, indirect=True)
_ids = itertools.count(7_100_000, 10)


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def message(user: FakeUser, message_id: int) -> dict[str, Any]:
    return next(m for m in user.inbox() if m["message_id"] == message_id)


def press(user: FakeUser, message_id: int, label: str) -> dict[str, Any]:
    data = next(b["callback_data"] for row in message(user, message_id)["reply_markup"][
        "inline_keyboard"] for b in row if label in b["text"])
    return user.press(message_id, data)


def people(api: FakeBotApi, language: str) -> tuple[FakeUser, FakeUser]:
    base = next(_ids)
    return (api.user(base, "Alice", language_code=language),
            api.user(base + 1, "Bob", language_code=language))


def test_exit_on_an_old_chat_started_leaves_the_truth_on_the_newest_line(
        function_server: FunctionServer, served_api: FakeBotApi):
    post = function_server.post
    alice, bob = people(served_api, "sw")
    post(alice.command("find_chat"))
    post(bob.command("find_chat"))
    started = next(m for m in alice.inbox() if m.get("text", "").startswith("Chat started"))
    post(alice.command("exit_chat"))
    post(alice.press_button("No"))
    assert alice.last()["text"] == "OK, the chat goes on.", "the newest question, in place"
    post(bob.text("hey, still there?"))  # its copy is now Alice's newest message

    post(press(alice, started["message_id"], "Exit Chat"))
    question = alice.last()
    assert question["text"] == "Are you sure you want to end this chat?"
    assert question["message_id"] > started["message_id"], "asked at the bottom"
    assert buttons(message(alice, started["message_id"])) == [], "old buttons retire"
    post(alice.press_button("Yes"))
    assert alice.last()["message_id"] == question["message_id"], "the newest, in place"
    assert alice.last()["text"].startswith("You have closed the chat.")


def test_the_users_own_last_message_makes_a_button_above_it_old(
        function_server: FunctionServer, served_api: FakeBotApi):
    post = function_server.post
    alice, bob = people(served_api, "nl")
    post(alice.command("find_chat"))
    post(bob.command("find_chat"))
    started = alice.last()
    post(alice.text("hello"))  # relayed: only the message log knows it
    post(press(alice, started["message_id"], "Exit Chat"))
    assert alice.last()["text"] == "Are you sure you want to end this chat?"
    assert alice.last()["message_id"] > started["message_id"]


def test_a_button_on_the_newest_message_answers_in_place_and_older_ones_below(
        function_server: FunctionServer, served_api: FakeBotApi):
    post = function_server.post
    alice, _ = people(served_api, "it")
    post(alice.command("start"))
    welcome = alice.last()
    post(alice.command("help"))
    help_message = alice.last()
    count = len(alice.inbox())
    post(press(alice, help_message["message_id"], "About"))
    assert len(alice.inbox()) == count and alice.last()["message_id"] == \
        help_message["message_id"], "the newest message is answered in place"

    post(press(alice, welcome["message_id"], "Find Chat"))
    assert alice.last()["message_id"] > help_message["message_id"]
    assert alice.last()["text"].startswith("Searching for someone")
    assert buttons(message(alice, welcome["message_id"])) == []
    assert message(alice, welcome["message_id"])["text"] == welcome["text"]


def test_mydata_shows_the_newest_message_noted(function_server: FunctionServer,
                                               served_api: FakeBotApi):
    post = function_server.post
    alice, _ = people(served_api, "pl")
    post(alice.command("start"))
    post(alice.command("help"))
    noted = alice.last()["message_id"]
    post(alice.command("mydata"))
    data = json.loads(alice.last()["document"]["content"])
    assert data["newest_bot_message_id"] == noted, "noted after the export was made"
