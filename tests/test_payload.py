"""The shape an authentic update must have: unit tests on the pure rule, with edge values.

Random fuzzing rarely hits the values that break a store (2^63, a lone surrogate, a float
id), so these strategies put exactly those into every field the bot reads.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.payload import INT64, MAX_DEPTH, problem

EDGE_VALUES = [2**63, -(2**63) - 1, 2**64, 2**70, 5.5, 1e300, True, None, [], {}, [1, 2],
               {"a": 1}, "\ud800", "x\udfffy", "", "1"]
"""Values that are wrong wherever the bot reads an id, a name or a text."""

# Fields the bot reads, with what each must be: an integer id, a string, or an object.
FIELDS = {
    ("message", "message_id"): "int", ("message", "from", "id"): "int",
    ("message", "chat", "id"): "int", ("message", "chat", "type"): "str",
    ("message", "text"): "str?", ("message", "from", "first_name"): "str?",
    ("message", "from", "language_code"): "str?", ("message", "from", "username"): "str?",
    ("message", "from", "is_bot"): "bool", ("message", "from"): "object?",
    ("message", "chat"): "object", ("update_id",): "uint",
}


def acceptable(kind: str, value: Any) -> bool:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int":
        return is_int and -INT64 <= value < INT64
    if kind == "uint":
        return is_int and 0 <= value < INT64
    if kind == "bool":
        return isinstance(value, bool)
    valid_text = isinstance(value, str) and all(not 0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if kind == "str":
        return valid_text
    if kind == "str?":
        return value is None or valid_text
    if kind == "object?":
        return value is None  # an empty object lacks the id
    return False


@pytest.fixture(scope="module")
def good_update() -> dict[str, Any]:
    with FakeBotApi() as api:
        return api.user(42, "Ann").text("hello")


def test_what_telegram_sends_passes(good_update: dict[str, Any]):
    with FakeBotApi() as api:
        user = api.user(7, "Bo")
        for update in (user.text("hi"), user.command("start"), user.media("photo", "cap"),
                       user.media("poll"), user.block_bot(), user.edit(1, "x")):
            kind = next(k for k in update if k != "update_id")
            assert problem(update, kind) is None, update
    assert problem(good_update, "message") is None


@given(field=st.sampled_from(sorted(FIELDS)), value=st.sampled_from(EDGE_VALUES))
def test_an_edge_value_in_any_read_field_is_named(good_update: dict[str, Any],
                                                  field: tuple[str, ...], value: Any):
    update = copy.deepcopy(good_update)
    target = update
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    found = problem(update, "message")
    if acceptable(FIELDS[field], value):
        assert found is None, (field, value, found)
    else:
        assert found is not None, (field, value)
        assert repr(value) not in found or isinstance(value, bool | type(None)), \
            "the reason names the field, never the value"


@given(st.integers())
def test_ids_are_held_to_64_bits_anywhere(value: int):
    update = {"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1, "type": "private"},
                                          "date": 0, "extra": {"deep": [value]}}}
    assert (problem(update, "message") is None) == (-INT64 <= value < INT64)


def test_depth_is_bounded_without_recursion():
    inner: Any = "leaf"
    for _ in range(100_000):  # far past Python's recursion limit
        inner = [inner]
    update = {"update_id": 1, "message": {"message_id": 1, "chat": {"id": 1, "type": "private"},
                                          "reply_to_message": inner}}
    assert "nested deeper" in (problem(update, "message") or "")
    shallow: Any = "leaf"
    for _ in range(MAX_DEPTH - 4):
        shallow = [shallow]
    update["message"]["reply_to_message"] = shallow
    assert problem(update, "message") is None


def test_a_real_reply_chain_is_within_the_depth(good_update: dict[str, Any]):
    update = copy.deepcopy(good_update)
    message = update["message"]
    for _ in range(10):  # a reply quoting a reply quoting ... as Telegram nests them
        message = {**copy.deepcopy(good_update["message"]), "reply_to_message": message}
    update["message"] = message
    assert problem(json.loads(json.dumps(update)), "message") is None
