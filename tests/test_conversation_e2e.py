"""Two strangers meet, talk with every kind of message, and part: end to end over HTTP.

The updates go through functions-framework serving main.py; the assertions read what each
user's chat shows in the fake Bot API's model, as a Telegram client would show it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS, ROOT, SECRET, FunctionServer, bot_env
from messagine.dev.fake_bot_api import CONTENT_FIELDS, SAMPLE_CONTENT, FakeBotApi, FakeUser
from messagine.safety import CONFIRMED_KINDS
from support import log_filter

pytestmark = [pytest.mark.slow,
              pytest.mark.parametrize("served", [*BACKENDS, "sqlite-cloud-logging"],
                                      indirect=True, scope="module")]


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def content(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k in CONTENT_FIELDS}


def without_dates(message: Any) -> Any:
    """The message with its timestamps left out, whose digits could contain any id."""
    if isinstance(message, list):
        return [without_dates(m) for m in message]
    return {k: without_dates(v) if isinstance(v, dict) else v for k, v in message.items()
            if k not in ("date", "edit_date")}


def assert_anonymous_copy(copy: dict[str, Any], original: dict[str, Any], sender: FakeUser):
    """The copy is the original's content, from the bot, with nothing of the sender."""
    assert content(copy) == content(original), "nothing inserted or removed"
    assert copy["from"]["is_bot"]
    for header in ("forward_origin", "forward_from", "forward_sender_name", "forward_date"):
        assert header not in copy
    serialised = json.dumps(without_dates(copy), ensure_ascii=False)
    for trace in (str(sender.id), sender.profile["first_name"]):
        assert trace not in serialised, f"the copy carries the sender's {trace!r}"


def test_two_strangers_meet_talk_and_part(function_server: FunctionServer, served_api: FakeBotApi,
                                          request: pytest.FixtureRequest):
    post = function_server.post
    alice = served_api.user(7001, "Alice", username="alice_w")
    bob = served_api.user(7002, "Bobby", language_code="en-GB")

    # Welcome, with the language named and the four buttons.
    assert post(alice.command("start")).status_code == 200
    welcome = alice.last()
    assert "English" in welcome["text"]
    assert buttons(welcome) == ["🔍 Find Chat", "🌐 Language", "ℹ️ About", "❓ Help"]
    post(bob.command("start"))

    # Alice waits: the welcome becomes the lobby message, and its callback is answered.
    post(alice.press_button("Find Chat"))
    assert alice.last()["text"].startswith("Searching for someone who speaks English")
    assert buttons(alice.last())[:2] == ["🌍 Chat with anyone", "🚪 Stop searching"]
    assert len(alice.inbox()) == 1, "the pressed message was updated, not repeated"
    assert len(served_api.calls_of("answerCallbackQuery")) == 1
    post(alice.command("find_chat"))
    assert "already searching" in alice.last()["text"]

    # Bob searches with an alias and they are paired at once.
    post(bob.command("search"))
    for user in (alice, bob):
        assert user.last()["text"].startswith("Chat started")
        assert buttons(user.last()) == ["👋 Say Hi", "🚪 Exit Chat"]

    # Say Hi reaches Bob; Alice's notice says so and keeps only the exit button.
    post(alice.press_button("Say Hi"))
    assert bob.last()["text"] == "👋 Hi!"
    assert buttons(alice.last()) == ["🚪 Exit Chat"]
    assert alice.last()["text"].startswith("Chat started")
    assert alice.last()["text"].endswith("👋 You said hi.")

    # Every content type arrives as an anonymous copy.
    hello = alice.text("Hello *there*", entities=[{"type": "bold", "offset": 6, "length": 7}])
    post(hello)
    assert_anonymous_copy(bob.last(), hello["message"], alice)
    for content_type in SAMPLE_CONTENT:
        caption = "look at this" if content_type in ("photo", "video", "document") else None
        update = alice.media(content_type, caption=caption)
        assert post(update).status_code == 200
        if content_type in CONFIRMED_KINDS:  # sent once Alice confirms (tests/test_safety)
            assert post(alice.press_button("Send")).status_code == 200
        assert_anonymous_copy(bob.last(), update["message"], alice)

    # Replies land on the right message on the other side, both ways.
    copy_of_hello = next(m for m in bob.inbox() if m.get("text") == "Hello *there*")
    reply = bob.text("hi Alice's copy", reply_to=copy_of_hello["message_id"])
    post(reply)
    assert alice.last()["reply_to_message"]["message_id"] == hello["message"]["message_id"]
    bob_reply_copy = alice.last()
    post(alice.text("answering", reply_to=bob_reply_copy["message_id"]))
    assert bob.last()["reply_to_message"]["message_id"] == reply["message"]["message_id"]

    # An edit is mirrored on the copy, text and caption alike, with no "edited" text added.
    post(alice.edit(hello["message"]["message_id"], text="Hello there, edited"))
    edited = next(m for m in bob.inbox() if m["message_id"] == copy_of_hello["message_id"])
    assert edited["text"] == "Hello there, edited" and "edit_date" in edited
    photo = alice.media("photo", caption="before")
    post(photo)
    photo_copy_id = bob.last()["message_id"]
    post(alice.edit(photo["message"]["message_id"], caption="after"))
    assert next(m for m in bob.inbox() if m["message_id"] == photo_copy_id)["caption"] == "after"

    # /delete as a reply removes Bob's copy.
    post(alice.command("delete", reply_to=photo["message"]["message_id"]))
    assert photo_copy_id not in [m["message_id"] for m in bob.inbox()]
    assert alice.last()["text"] == "Deleted for your partner."

    # Exit asks first; No keeps the chat, Yes ends it and both sides are told once.
    post(alice.command("exit_chat"))
    assert buttons(alice.last()) == ["Yes ✅", "No ❌"]
    post(alice.press_button("No"))
    assert alice.last()["text"] == "OK, the chat goes on."
    post(alice.command("stop"))
    post(alice.press_button("Yes"))
    assert alice.last()["text"].startswith("You have closed the chat.\n")
    assert bob.last()["text"].startswith("Chat closed by your partner.\n")
    for user in (alice, bob):
        assert buttons(user.last()) == ["👍", "👎", "🚩 Report", "▶️ Next chat"]
    assert sum("closed by your partner" in t for t in bob.texts()) == 1

    # They just met, so they are not paired again.
    post(alice.command("find"))
    post(bob.command("find"))
    assert all(u.last()["text"].startswith("Searching for someone") for u in (alice, bob))
    post(alice.command("cancel_find"))
    assert alice.last()["text"] == "You stopped searching."
    post(alice.command("cancel_find"))
    assert alice.last()["text"] == "You are not searching right now."

    post(alice.command("about"))
    about = alice.last()["text"]
    assert "Previous chats: 1" in about and "Your previous chats: 1" in about
    assert "Users waiting: 1" in about

    # Privacy: no content, token or secret in the logs; no parameter in a Bot API URL.
    log = function_server.log()
    assert "outcome=relayed" in log
    for private in ("Hello", "there", "hi Alice", "answering", "look at this", "before",
                    "after", "+15550100", "52.52", "Eiffel", "Tea or coffee", "alice_w",
                    "Alice", "Bobby", served_api.token, served_api.token.split(":")[1],
                    SECRET, "AgAD-photo", "CAAD-sticker"):
        assert private not in log, f"{private!r} appeared in the log"
    assert all(call.query == "" for call in served_api.calls)
    # functions-framework sets FUNCTION_TARGET, so every variant logs as on Google Cloud:
    # one JSON object per line; with a project id the trace is the full trace name.
    if '"severity"' in log:
        records = [json.loads(line) for line in log.splitlines() if line.strip()]
        updates = [r for r in records if "update_id" in r]
        assert len(updates) == len({r["update_id"] for r in updates}), "one line per update"
        assert all(r["severity"] == "INFO" and r["latency_ms"] >= 0 for r in updates)
        trace = updates[-1]["logging.googleapis.com/trace"]
        assert trace.endswith(function_server.trace_id)
        if request.node.callspec.params["served"] == "sqlite-cloud-logging":
            assert trace == f"projects/demo-project/traces/{function_server.trace_id}"
        assert {"update_id", "kind", "content_type", "outcome", "backend"} <= set(updates[-1])


def test_what_the_bot_sends_never_names_the_partner(
    function_server: FunctionServer, served_api: FakeBotApi
):
    alice = served_api.user(7101, "Zelda", username="zelda_secret", last_name="Hyrule")
    bob = served_api.user(7102, "Link", username="link_secret")
    for update in (alice.command("find_chat"), bob.command("find_chat"), alice.text("hey"),
                   bob.text("hello"), alice.command("next")):
        function_server.post(update)
    for receiver, sender in ((bob, alice), (alice, bob)):
        seen = json.dumps(without_dates(receiver.inbox()), ensure_ascii=False)
        for trace in (sender.profile["first_name"], sender.profile["username"], str(sender.id)):
            assert trace not in seen


def test_users_are_answered_in_their_language_over_http(
    function_server: FunctionServer, served_api: FakeBotApi
):
    for user_id, code, welcome in ((7201, "de", "Willkommen bei Messagine"),
                                   (7202, "tr", "Messagine'e hoş geldin"),
                                   (7203, "ru", "Добро пожаловать в Messagine"),
                                   (7204, "ar", "أهلًا بك في Messagine"),
                                   (7205, "zz", "Welcome to Messagine")):
        user = served_api.user(user_id, "U", language_code=code)
        assert function_server.post(user.command("start")).status_code == 200
        assert user.last()["text"].startswith(welcome)


def test_every_metric_reads_fields_the_bot_writes(
    function_server: FunctionServer, served_api: FakeBotApi, request: pytest.FixtureRequest,
    tmp_path: Path,
):
    """The log-based metrics (messagine/ops/metrics) against this module's capture of JSON lines.

    Every filter must select some line the bot wrote, and every label and value it
    extracts must be there on each line it selects: a filter or label naming a field the
    bot never writes fails here. The capture is the whole module's (the conversation
    above), plus a Bot API failure, a 503 and a run of the reminders job, which it lacks.
    """
    if request.node.callspec.params["served"] != "sqlite-cloud-logging":
        pytest.skip("the metrics read Cloud Logging's JSON lines")
    carol, dave = served_api.user(7301, "Carol"), served_api.user(7302, "Dave")
    function_server.post(carol.command("find_chat"))
    function_server.post(dave.command("find_chat"))
    served_api.fail("copyMessage", status=502)
    assert function_server.post(carol.text("will be retried")).status_code == 503
    served_api.webhook.update({"pending_update_count": 7, "last_error_date": 1_700_000_000,
                               "last_error_message": "Wrong response from the webhook: 503"})
    job_env = {**bot_env(served_api, tmp_path / "job.sqlite3"), "JOB_SECRET": "job-secret-0123",
               "K_SERVICE": "messagine-reminders", "GOOGLE_CLOUD_PROJECT": "demo-project",
               "ERASURE_PEPPER": "test-erasure-pepper-0123456789"}
    job = FunctionServer(job_env, target="reminders")
    try:
        answer = job.post({}, secret=None, headers={"X-Job-Secret": "job-secret-0123"})
        assert answer.status_code == 200, job.log()
        job_log = job.log()
    finally:
        job.stop()
    capture = function_server.log_path.read_text() + job_log
    entries = [log_filter.entry(json.loads(line)) for line in capture.splitlines()
               if line.startswith("{")]
    for metric in log_filter.metric_definitions(ROOT):
        selected = [e for e in entries if log_filter.matches(metric["filter"], e)]
        assert selected, f"{metric['name']}: its filter selects no line the bot wrote"
        for label, extractor in metric.get("labelExtractors", {}).items():
            for e in selected:
                assert log_filter.extract(extractor, e) is not None, (metric["name"], label, e)
        if "valueExtractor" in metric:
            for e in selected:
                assert isinstance(log_filter.extract(metric["valueExtractor"], e), int | float)
    for path in {f for m in log_filter.metric_definitions(ROOT)
                 for f in log_filter.fields(m["filter"])}:
        assert any(log_filter.lookup(e, path) is not None for e in entries), path
