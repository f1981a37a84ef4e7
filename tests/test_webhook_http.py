"""The webhook through the real entry point: functions-framework serving main.py.

Each request goes over HTTP to a subprocess, which talks to the fake Bot API over HTTP.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import SECRET, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi

SAMPLES = Path(__file__).parent / "samples"
pytestmark = pytest.mark.slow


def sample(name: str, update_id: int | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((SAMPLES / f"{name}.json").read_text())
    if update_id is not None:
        payload["update_id"] = update_id
    return payload


def stored_user(server: FunctionServer, user_id: int) -> bool:
    path = server.log_path.with_suffix(".sqlite3")
    if not path.exists():
        return False
    with sqlite3.connect(path) as conn:
        try:
            row = conn.execute("SELECT 1 FROM users WHERE id = ?", (user_id,)).fetchone()
        except sqlite3.OperationalError:
            return False
    return row is not None


def test_only_post_is_accepted(function_server: FunctionServer, served_api: FakeBotApi):
    import requests

    response = requests.get(function_server.url, timeout=10)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert served_api.calls == []


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", SECRET + "x", SECRET[:-1]])
def test_a_wrong_secret_gets_401_and_nothing_happens(
    function_server: FunctionServer, served_api: FakeBotApi, secret: str | None
):
    intruder = served_api.user(31_337, "Mallory")
    response = function_server.post(intruder.command("find_chat"), secret=secret)
    assert response.status_code == 401
    assert served_api.calls == [], "no Bot API call for a forged update"
    assert not stored_user(function_server, 31_337), "nothing stored for a forged update"
    assert "wrong secret" in function_server.log()


def test_a_body_over_one_mebibyte_gets_413(function_server: FunctionServer, served_api: FakeBotApi):
    body = json.dumps({"update_id": 1, "padding": "x" * (1024 * 1024)})
    response = function_server.post(body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert served_api.calls == []


@pytest.mark.parametrize("body", [b"not json", b"[1, 2, 3]", b'"a string"', b"\xff\xfe",
                                  b"", b'{"update_id": 1,'])
def test_a_body_that_is_not_a_json_object_gets_400(
    function_server: FunctionServer, served_api: FakeBotApi, body: bytes
):
    response = function_server.post(body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert served_api.calls == []
    assert "refused request whose" in function_server.log()


@pytest.mark.parametrize("payload", [
    {"hello": "world"},
    {"update_id": "12"},
    {"update_id": 77},
    {"update_id": 78, "message": "not an object"},
    {"update_id": 79, "message": {"message_id": 1}},
    {"update_id": 80, "callback_query": {"id": "1"}},
    {"update_id": 81, "my_chat_member": []},
])
def test_unusable_updates_get_200_and_a_log_line(
    function_server: FunctionServer, served_api: FakeBotApi, payload: dict[str, Any]
):
    response = function_server.post(payload)
    assert response.status_code == 200
    assert served_api.calls == []
    assert "outcome=ignored:" in function_server.log()


@pytest.mark.parametrize("name", ["channel_post", "inline_query", "from_bot"])
def test_kinds_and_senders_we_do_not_serve_get_200_and_no_answer(
    function_server: FunctionServer, served_api: FakeBotApi, name: str
):
    assert function_server.post(sample(name)).status_code == 200
    assert served_api.calls == []
    assert "outcome=ignored:" in function_server.log()


def test_in_a_group_the_bot_says_it_is_private_only_and_leaves(
    function_server: FunctionServer, served_api: FakeBotApi
):
    for name in ("group_message", "added_to_group"):
        assert function_server.post(sample(name)).status_code == 200
    sends = served_api.calls_of("sendMessage")
    assert [c.chat_id for c in sends] == [-1001987654321, -4012345678]
    assert all("private chats only" in c.params["text"] for c in sends)
    assert [c.chat_id for c in served_api.calls_of("leaveChat")] == [-1001987654321, -4012345678]
    assert not stored_user(function_server, 5550002), "group members are not registered"


def test_a_redelivered_message_is_relayed_once(
    function_server: FunctionServer, served_api: FakeBotApi
):
    alice, bob = served_api.user(21, "Alice"), served_api.user(22, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        assert function_server.post(update).status_code == 200
    served_api.reset_calls()
    update = alice.text("once")
    assert function_server.post(update).status_code == 200
    assert function_server.post(update).status_code == 200
    assert [c.method for c in served_api.calls] == ["copyMessage"]
    assert "outcome=duplicate" in function_server.log()


def test_a_command_answered_200_and_delivered_again_is_not_answered_again(
    function_server: FunctionServer, served_api: FakeBotApi
):
    """A re-delivery of a finished update (its claim is done) does nothing, commands too;
    only an attempt that died (its lease expired) is run again (tests/test_exactly_once)."""
    update = sample("private_text", 2_000)
    assert function_server.post(update).status_code == 200
    assert [c.method for c in served_api.calls] == ["sendMessage"]
    assert function_server.post(update).status_code == 200
    assert [c.method for c in served_api.calls] == ["sendMessage"]
    assert "outcome=duplicate" in function_server.log()


def test_a_telegram_failure_answers_503_and_the_redelivery_is_processed(
    function_server: FunctionServer, served_api: FakeBotApi
):
    alice, bob = served_api.user(11, "Alice"), served_api.user(12, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        assert function_server.post(update).status_code == 200
    served_api.fail("copyMessage", status=502)
    message = alice.text("are you there?")
    assert function_server.post(message).status_code == 503
    assert served_api.calls_of("copyMessage") == []
    assert function_server.post(message).status_code == 200, "the claim was released"
    assert function_server.post(message).status_code == 200
    copies = served_api.calls_of("copyMessage")
    assert len(copies) == 1, "delivered exactly once"
    assert bob.last()["text"] == "are you there?"
    assert "outcome=retry:telegram" in function_server.log()


def test_blocking_the_bot_ends_the_chat_and_tells_the_partner(
    function_server: FunctionServer, served_api: FakeBotApi
):
    alice, bob = served_api.user(21, "Alice"), served_api.user(22, "Bob")
    for update in (alice.command("find_chat"), bob.command("find_chat")):
        function_server.post(update)
    assert function_server.post(alice.block_bot()).status_code == 200
    assert "left Messagine" in bob.last()["text"]
    assert "outcome=blocked_bot:chat_ended" in function_server.log()
    function_server.post(bob.text("hello?"))
    assert "not in a chat" in bob.last()["text"]
    assert function_server.post(alice.unblock_bot()).status_code == 200
    assert "outcome=unblocked_bot" in function_server.log()
