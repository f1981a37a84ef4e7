"""A relayed message reaches only the chat it was sent in, through the HTTP entry point.

A copy that Telegram holds back with a 429 waits inside the update's budget; if the chat
ends meanwhile (the recipient runs /next and meets someone new), the copy is withdrawn and
the sender is told, instead of landing in the recipient's next chat where it would seem
to come from the new partner.
"""

from __future__ import annotations

import threading
import time

import pytest

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("served", BACKENDS, indirect=True)]

NOT_DELIVERED = ("Your partner left the chat before this message reached them, so it was "
                 "not delivered.")


def _until_called(api: FakeBotApi, method: str, chat_id: int) -> None:
    """Wait until the bot's call to ``method`` for ``chat_id`` was answered 429."""
    for _ in range(200):
        if any(c.method == method and c.chat_id == chat_id and c.status == 429
               for c in api.calls):
            return
        time.sleep(0.05)
    raise AssertionError(f"{method} never got its 429")


def _pair(server: FunctionServer, a: FakeUser, b: FakeUser) -> None:
    assert server.post(a.command("find_chat")).status_code == 200
    assert server.post(b.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in a.texts())


def _in_background(server: FunctionServer, update: dict) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(server.post(update)))
    thread.start()
    return thread, answers


def test_a_copy_held_by_a_429_never_lands_in_the_next_chat(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b, c = (served_api.user(7_100_001 + i, name) for i, name in enumerate("ABC"))
    _pair(function_server, a, b)
    served_api.fail("copyMessage", chat_id=a.id, status=429, retry_after=3, times=1)
    thread, answers = _in_background(function_server, b.text("meant for A only"))
    _until_called(served_api, "copyMessage", a.id)  # B's copy now waits out the 429
    assert function_server.post(a.command("next")).status_code == 200
    assert function_server.post(c.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in c.texts())  # A and C are paired
    thread.join(30)
    assert answers and answers[0].status_code == 200
    assert "meant for A only" not in list(a.texts())
    assert b.last()["text"] == NOT_DELIVERED
    assert "outcome=relay:chat_ended" in function_server.log()


def test_a_copy_held_by_a_429_in_a_chat_that_lasts_arrives_once(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = served_api.user(7_200_001, "A"), served_api.user(7_200_002, "B")
    _pair(function_server, a, b)
    served_api.fail("copyMessage", chat_id=a.id, status=429, retry_after=1, times=1)
    assert function_server.post(b.text("patience")).status_code == 200
    assert list(a.texts()).count("patience") == 1


def test_an_edit_held_by_a_429_is_not_applied_after_the_chat_ended(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = served_api.user(7_300_001, "A"), served_api.user(7_300_002, "B")
    _pair(function_server, a, b)
    sent = b.text("first words")
    assert function_server.post(sent).status_code == 200
    served_api.fail("editMessageText", chat_id=a.id, status=429, retry_after=3, times=1)
    thread, answers = _in_background(
        function_server, b.edit(sent["message"]["message_id"], "changed words"))
    _until_called(served_api, "editMessageText", a.id)  # the edit waits out the 429
    assert function_server.post(a.command("next")).status_code == 200
    thread.join(30)
    assert answers and answers[0].status_code == 200
    assert "changed words" not in list(a.texts())
    assert "outcome=edit:chat_ended" in function_server.log()
    assert function_server.post(a.command("cancel_find")).status_code == 200  # leave no one


def test_a_copy_made_after_its_chat_ended_is_taken_back(
        function_server: FunctionServer, served_api: FakeBotApi):
    """Telegram is slow to make the copy; meanwhile the recipient runs /next and meets
    someone new: the copy that lands after the chat ended is deleted, the sender told."""
    a, b, c = (served_api.user(7_400_001 + i, name) for i, name in enumerate("ABC"))
    _pair(function_server, a, b)
    # Slower than the steps below, well inside the bot's 5 s Bot API timeout.
    slow = served_api.fail("copyMessage", chat_id=a.id, status=200, delay=3, times=1)
    thread, answers = _in_background(function_server, b.text("late for A"))
    for _ in range(100):  # until B's copy is in flight, slowly
        if slow.hits:
            break
        time.sleep(0.02)
    assert function_server.post(a.command("next")).status_code == 200
    assert function_server.post(c.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in c.texts())  # A is with C now
    thread.join(30)
    assert answers and answers[0].status_code == 200
    assert "late for A" not in list(a.texts()), "taken back from A's new chat"
    assert served_api.calls_of("deleteMessage", a.id)
    assert b.last()["text"] == NOT_DELIVERED
