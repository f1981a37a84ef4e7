"""Exactly once, whatever Telegram re-sends: through the HTTP entry point on every backend.

Telegram re-sends an update after a dropped connection while the first attempt may still
be running, or waiting out a 429. The claim of an update has a state: a re-delivery
under a live lease is answered 503 with no work, one of a finished update 200 with no
work, commands included.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import requests

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("served", BACKENDS, indirect=True)]


def _pair(server: FunctionServer, api: FakeBotApi, base: int) -> tuple[FakeUser, FakeUser]:
    a, b = api.user(base + 1, "A"), api.user(base + 2, "B")
    for user in (a, b):
        _until_200(server, user.command("find_chat"))  # as Telegram: re-sent after a 503
    assert any("Chat started" in t for t in b.texts())
    return a, b


def _at_once(server: FunctionServer, update: dict[str, Any], times: int) -> list[int]:
    """Post the same update ``times`` times at once; the HTTP statuses."""
    statuses: list[int] = []
    start = threading.Barrier(times)

    def post() -> None:
        start.wait()
        statuses.append(server.post(update).status_code)

    threads = [threading.Thread(target=post) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return statuses


def _until_200(server: FunctionServer, update: dict[str, Any]) -> None:
    """Re-deliver as Telegram does until the answer is 200."""
    for _ in range(40):
        if server.post(update).status_code == 200:
            return
        threading.Event().wait(0.25)
    raise AssertionError("never answered 200")


@pytest.mark.parametrize("times", [2, 5, 10])
def test_the_same_message_delivered_many_times_at_once_is_relayed_once(
        function_server: FunctionServer, served_api: FakeBotApi, times: int):
    a, b = _pair(function_server, served_api, 5_100_000 + times * 10)
    update = a.text(f"only once, of {times}")
    statuses = _at_once(function_server, update, times)
    assert set(statuses) <= {200, 503} and 200 in statuses, statuses
    _until_200(function_server, update)
    assert list(b.texts()).count(f"only once, of {times}") == 1


def test_a_redelivery_while_the_first_attempt_waits_out_a_429_is_not_relayed_again(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = _pair(function_server, served_api, 5_200_000)
    served_api.fail("copyMessage", chat_id=b.id, status=429, retry_after=4, times=1)
    update = a.text("held by a 429")
    first: list[requests.Response] = []
    thread = threading.Thread(target=lambda: first.append(function_server.post(update)))
    thread.start()
    for _ in range(100):  # until the first attempt got its 429 and waits it out
        if any(c.method == "copyMessage" and c.chat_id == b.id and c.status == 429
               for c in served_api.calls):
            break
        threading.Event().wait(0.05)
    redelivered = function_server.post(update)
    assert redelivered.status_code == 503, "busy: Telegram will try again later"
    thread.join(30)
    assert first and first[0].status_code == 200
    assert function_server.post(update).status_code == 200  # and now it is done
    assert list(b.texts()).count("held by a 429") == 1
    assert "retry:in_progress" in function_server.log()


@pytest.mark.parametrize("command", ["help", "mydata", "about"])
def test_a_command_answered_200_and_delivered_again_is_not_run_again(
        function_server: FunctionServer, served_api: FakeBotApi, command: str):
    user = served_api.user(5_300_000 + len(command), "Cmd")
    update = user.command(command)
    _until_200(function_server, update)
    answers = len(served_api.messages(user.id))
    assert answers >= 2  # the command and its answer
    for _ in range(3):
        assert function_server.post(update).status_code == 200
    assert len(served_api.messages(user.id)) == answers, "answered once"


def test_five_simultaneous_help_commands_get_one_answer(
        function_server: FunctionServer, served_api: FakeBotApi):
    user = served_api.user(5_400_000, "Five")
    update = user.command("help")
    statuses = _at_once(function_server, update, 5)
    assert set(statuses) <= {200, 503}
    _until_200(function_server, update)
    bot_id = served_api.bot_user["id"]
    answers = [m for m in served_api.messages(user.id) if m["from"]["id"] == bot_id]
    assert len(answers) == 1, [m.get("text", "")[:30] for m in answers]
