"""Honest waiting: the lobby message counts only who can be paired with you, offers the
any-language pool at once, and every keyboard agrees with the user's state.

The count and the pools come from the store, so these run through the HTTP entry point on
every backend.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi

pytestmark = pytest.mark.parametrize("served", BACKENDS, indirect=True)
_ids = itertools.count(7_300_000, 10)
NOBODY = "Right now nobody else who can be paired with you is searching in {}."


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def test_the_count_leaves_out_who_cannot_be_paired_and_anyone_is_offered_at_once(
        function_server: FunctionServer, served_api: FakeBotApi):
    post, base = function_server.post, next(_ids)
    alice = served_api.user(base, "Alice", language_code="fi")
    bob = served_api.user(base + 1, "Bob", language_code="fi")
    carol = served_api.user(base + 2, "Carol", language_code="da")
    post(alice.command("find_chat"))
    assert NOBODY.format("Suomi") in alice.last()["text"]
    assert "Also searching" not in alice.last()["text"]
    post(bob.command("find_chat"))  # paired
    post(bob.command("next"))  # Bob waits again
    post(alice.command("find_chat"))  # they just met: Alice waits beside Bob, unpaired
    told = alice.last()["text"]
    assert NOBODY.format("Suomi") in told
    assert "Also searching in Suomi, but not someone you can be paired with now" in told
    assert told.split("\n\n")[2].endswith(": 1.")
    assert buttons(alice.last())[:2] == ["🌍 Chat with anyone", "🚪 Stop searching"]

    # Anyone, from the lobby message itself: Alice waits in the any-language pool, where
    # Carol (another language) finds her.
    post(alice.press_button("Chat with anyone"))
    assert alice.last()["text"].startswith("🌍 Searching for someone of any language")
    assert "Suomi" not in alice.last()["text"]
    assert "🌍 Chat with anyone" not in buttons(alice.last()), "offered once, not again"
    post(carol.command("find_chat"))
    post(carol.press_button("Chat with anyone"))
    assert carol.last()["text"].startswith("Chat started")
    assert alice.last()["text"].startswith("Chat started")


def test_welcome_back_shows_the_keyboard_of_the_users_state(
        function_server: FunctionServer, served_api: FakeBotApi):
    post, base = function_server.post, next(_ids)
    alice = served_api.user(base, "Alice", language_code="hu")
    bob = served_api.user(base + 1, "Bob", language_code="hu")
    post(alice.command("start"))
    post(alice.command("start"))
    assert alice.last()["text"] == "Welcome back! 👋"
    assert buttons(alice.last()) == ["🔍 Find Chat", "❓ Help"]
    post(alice.command("find_chat"))
    post(alice.command("start"))
    assert buttons(alice.last())[0] == "🚪 Stop searching", "searching: a way to stop"
    post(alice.text("/nonsense"))
    assert buttons(alice.last())[0] == "🚪 Stop searching"
    post(bob.command("find_chat"))
    post(alice.command("start"))
    assert buttons(alice.last())[0] == "🚪 Exit Chat"
