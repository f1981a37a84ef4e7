"""Authentic but malformed updates, through the real HTTP entry point on every backend.

Each carries the right secret, so it came from Telegram's side; none can ever be
processed, so each is answered 200 with one log line (a 5xx would make Telegram re-send it
for a day and hold back that chat), nothing is sent, and the same user's next update works.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from conftest import BACKENDS, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("served", BACKENDS, indirect=True)]

Change = Callable[[dict[str, Any]], None]


def _set(*path: str, value: Any) -> Change:
    def change(update: dict[str, Any]) -> None:
        target = update
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


CASES: dict[str, Change] = {
    "text is an object": _set("message", "text", value={"a": "/start"}),
    "text is a list": _set("message", "text", value=["/next"]),
    "update_id of 2^63": _set("update_id", value=2**63),
    "update_id of 2^64": _set("update_id", value=2**64),
    "user id of 2^63": lambda u: (_set("message", "from", "id", value=2**63)(u),
                                  _set("message", "chat", "id", value=2**63)(u)),
    "user id as a float": lambda u: (_set("message", "from", "id", value=5.5)(u),
                                     _set("message", "chat", "id", value=5.5)(u)),
    "language_code is a list": _set("message", "from", "language_code", value=["en"]),
    "a lone surrogate in a name": _set("message", "from", "first_name", value="A\ud800"),
    "a name of 10,000 characters": _set("message", "from", "first_name", value="x" * 10_000),
    "a message id beyond 64 bits": _set("message", "message_id", value=2**70),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malformed_update_gets_200_and_a_log_line(
        function_server: FunctionServer, served_api: FakeBotApi, case: str):
    user = served_api.user(8_100_000 + sorted(CASES).index(case), "Mal")
    update = copy.deepcopy(user.text("hello"))
    CASES[case](update)
    response = function_server.post(update)
    assert response.status_code == 200
    log = function_server.log()
    assert "outcome=ignored:malformed" in log
    assert "hello" not in log and "A\\ud800" not in log
    assert served_api.calls == []
    # The chat is not stalled: the same user's next (well-formed) update is answered.
    assert function_server.post(user.command("help")).status_code == 200
    assert served_api.calls_of("sendMessage", user.id)


def test_json_nested_past_the_decoder_gets_200(function_server: FunctionServer,
                                               served_api: FakeBotApi):
    body = '{"update_id": 1, "message": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = function_server.post(body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert "nested too deeply" in function_server.log()
    assert served_api.calls == []


def test_json_nested_within_the_decoder_but_past_the_rule_gets_200(
        function_server: FunctionServer, served_api: FakeBotApi):
    user = served_api.user(8_200_000, "Deep")
    update = user.text("hi")
    update["message"]["reply_to_message"] = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
    assert function_server.post(update).status_code == 200
    assert "nested deeper" in function_server.log()
    assert served_api.calls == []
