"""Fuzzing the webhook: whatever arrives, the answer is 200 or 4xx, never a 5xx or an
exception, and bad input changes nothing it should not.

CI runs a few hundred cases; FUZZ_EXAMPLES=10000 runs the benchmark-sized campaign.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import flask
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BACKENDS, SECRET, backend_env, bot_env, drop_test_repository
from messagine import webhook
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
KINDS = ["message", "edited_message", "callback_query", "my_chat_member", "channel_post",
         "inline_query", "poll", "chat_member", "unknown_kind"]

# Random values rarely hit what breaks a store; these edges are drawn as often as the rest.
edges = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**70, 2**53 + 1,
                         -1, 0, 5.5, 1e300, "\ud800", "a\udfff", "x" * 5000, [], {}])
scalars = st.one_of(edges, st.none(), st.booleans(), st.integers(-2**63, 2**63),
                    st.floats(allow_nan=False), st.text(max_size=50))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20)
unicode_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    ["/start", "/find_chat", "/delete", "/ban 1", "/analytics off", "\u202e", "\x00",
     "👋" * 2000, "a" * 5000, "/" + "x" * 100])


def user_dict() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": st.one_of(st.integers(1, 10**10), edges, scalars),
         "is_bot": st.one_of(st.booleans(), scalars),
         "first_name": st.one_of(st.text(max_size=30), scalars)},
        optional={"language_code": st.one_of(st.sampled_from(["en", "de", "ar", "xx", ""]),
                                              scalars),
                  "username": st.text(max_size=20)})


def message_dict() -> st.SearchStrategy[dict[str, Any]]:
    chat = st.fixed_dictionaries({"id": st.one_of(st.integers(-10**12, 10**10), scalars),
                                  "type": st.sampled_from(["private", "group", "supergroup",
                                                           "channel", "weird"])})
    return st.fixed_dictionaries(
        {"message_id": st.one_of(st.integers(1, 10**6), scalars), "date": st.integers(0, 2**31),
         "chat": st.one_of(chat, scalars), "from": st.one_of(user_dict(), scalars)},
        optional={"text": unicode_text, "caption": unicode_text,
                  "entities": st.lists(st.fixed_dictionaries(
                      {"type": st.sampled_from(["bot_command", "bold", "x"]),
                       "offset": st.integers(-5, 50), "length": st.integers(-5, 50)}),
                      max_size=3),
                  "photo": st.lists(json_values, max_size=2), "sticker": json_values,
                  "reply_to_message": json_values, "media_group_id": st.text(max_size=8),
                  "location": json_values, "poll": json_values})


updates = st.fixed_dictionaries(
    {"update_id": st.one_of(st.integers(-2**31, 2**40), edges, scalars)},
    optional={kind: st.one_of(message_dict(), json_values) for kind in KINDS[:2]}
    | {"callback_query": st.fixed_dictionaries(
        {"id": st.text(max_size=10), "from": user_dict(), "data": unicode_text},
        optional={"message": message_dict()}) | json_values,
       "my_chat_member": json_values, "channel_post": json_values, "unknown_kind": json_values})


@pytest.fixture(scope="module", params=BACKENDS)
def fuzzed_bot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The bot on each backend in turn: bad input must not reach any store's writes."""
    with FakeBotApi() as api:
        path = tmp_path_factory.mktemp("fuzz") / "fuzz.sqlite3"
        env = {**bot_env(api, Path(path)), **backend_env(request, request.param)}
        runtime = build_runtime(Settings.from_env(env))
        yield runtime, api
        if request.param != "sqlite":
            drop_test_repository(request, runtime.repository)


def post(runtime: Runtime, body: bytes, secret: str | None = SECRET) -> int:
    app = flask.Flask("fuzz")
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    with app.test_request_context("/", method="POST", data=body, headers=headers):
        _, status, _ = webhook.handle(flask.request, runtime)
    return status


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(update=updates)
def test_shaped_updates_never_get_a_5xx(fuzzed_bot: Any, update: dict[str, Any]) -> None:
    runtime, _ = fuzzed_bot
    status = post(runtime, json.dumps(update).encode())
    assert status in (200, 400), update


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=2000) | st.builds(lambda v: json.dumps(v).encode(), json_values))
def test_any_body_gets_200_or_400(fuzzed_bot: Any, body: bytes) -> None:
    runtime, _ = fuzzed_bot
    assert post(runtime, body) in (200, 400)


@settings(max_examples=max(50, EXAMPLES // 5), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(secret=st.one_of(st.none(), st.text(  # HTTP itself cannot carry control characters
    alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=300)), update=updates)
def test_a_wrong_secret_never_reaches_the_bot(fuzzed_bot: Any, secret: str | None,
                                              update: dict[str, Any]) -> None:
    runtime, api = fuzzed_bot
    if secret == SECRET:
        return
    calls = len(api.calls)
    assert post(runtime, json.dumps(update).encode(), secret=secret) == 401
    assert len(api.calls) == calls


def test_truncated_and_oversized_json(fuzzed_bot: Any) -> None:
    runtime, _ = fuzzed_bot
    whole = json.dumps({"update_id": 5, "message": {"message_id": 1, "text": "x"}}).encode()
    for cut in range(1, len(whole)):
        assert post(runtime, whole[:cut]) in (200, 400)
    assert post(runtime, b'{"update_id": 1, "pad": "' + b"x" * (1024 * 1024) + b'"}') == 413


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in [(*prefix, k), *_paths(v, (*prefix, k))]]
    if isinstance(value, list):
        return [p for i, v in enumerate(value)
                for p in [(*prefix, i), *_paths(v, (*prefix, i))]]
    return []


def _well_formed(api: FakeBotApi, which: str) -> dict[str, Any]:
    user = api.user(77_001, "Edge")
    return {"text": lambda: user.text("hello"), "command": lambda: user.command("find_chat"),
            "photo": lambda: user.media("photo", "cap"), "edit": lambda: user.edit(1, "x"),
            "press": lambda: user.press(1, "find"), "block": user.block_bot,
            }[which]()


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["text", "command", "photo", "edit", "press", "block"]),
       pick=st.integers(0, 10_000), value=edges | scalars)
def test_one_edge_value_in_a_well_formed_update_never_gets_a_5xx(
        fuzzed_bot: Any, which: str, pick: int, value: Any) -> None:
    """The whole update is right but for one field: the inputs that found every 5xx."""
    runtime, api = fuzzed_bot
    update = _well_formed(api, which)
    paths = _paths(update)
    path = paths[pick % len(paths)]
    target = update
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert post(runtime, json.dumps(update).encode()) == 200, (path, value)
