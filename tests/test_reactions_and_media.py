"""Reactions and media edits are mirrored on the other side, through HTTP on every backend."""

from __future__ import annotations

import pytest

from conftest import BACKENDS, FunctionServer
from conftest import pair_over_http as _pair
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.reactions import mirrored_emoji

on_every_backend = pytest.mark.parametrize("served", BACKENDS, indirect=True)


def test_the_mirrored_reaction_is_the_first_standard_emoji():
    assert mirrored_emoji([]) is None
    assert mirrored_emoji([{"type": "paid"}, {"type": "custom_emoji", "custom_emoji_id": "1"},
                           {"type": "emoji", "emoji": "🔥"}, {"type": "emoji", "emoji": "👍"}]
                          ) == "🔥"
    assert mirrored_emoji([{"type": "emoji"}]) is None


def _message(api: FakeBotApi, chat_id: int, message_id: int) -> dict:
    return next(m for m in api.messages(chat_id) if m["message_id"] == message_id)


@pytest.mark.slow
@on_every_backend
def test_reactions_are_mirrored_both_ways_while_the_chat_lasts(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = _pair(function_server, served_api, 6_100_000)
    sent = a.text("how are you?")
    assert function_server.post(sent).status_code == 200
    original = sent["message"]["message_id"]
    copy_id = served_api.messages(b.id)[-1]["message_id"]
    # B reacts to the copy they received: the reaction lands on A's original.
    assert function_server.post(b.react(copy_id, "👍")).status_code == 200
    assert _message(served_api, a.id, original).get("bot_reaction") == ["👍"]
    # B changes it, then removes it.
    function_server.post(b.react(copy_id, "🔥", before="👍"))
    assert _message(served_api, a.id, original)["bot_reaction"] == ["🔥"]
    function_server.post(b.react(copy_id, None, before="🔥"))
    assert "bot_reaction" not in _message(served_api, a.id, original)
    # A reacts to their own message: it lands on B's copy.
    function_server.post(a.react(original, "❤"))
    assert _message(served_api, b.id, copy_id)["bot_reaction"] == ["❤"]
    # A custom emoji changes nothing; after the chat, nothing is mirrored.
    function_server.mark_log()
    custom = b.react(copy_id, None)
    custom["message_reaction"]["new_reaction"] = [{"type": "custom_emoji",
                                                   "custom_emoji_id": "5368324170671202286"}]
    assert function_server.post(custom).status_code == 200
    assert "outcome=reaction:unchanged" in function_server.log()
    assert function_server.post(a.command("next")).status_code == 200
    function_server.post(b.react(copy_id, "😢"))
    assert _message(served_api, a.id, original).get("bot_reaction") is None
    assert served_api.calls_of("setMessageReaction") and all(
        c.status == 200 for c in served_api.calls_of("setMessageReaction"))
    assert function_server.post(a.command("cancel_find")).status_code == 200  # leave no one


@pytest.mark.slow
@on_every_backend
def test_an_edited_photo_replaces_the_copys_picture(
        function_server: FunctionServer, served_api: FakeBotApi):
    a, b = _pair(function_server, served_api, 6_200_000)
    sent = a.media("photo", caption="before")
    assert function_server.post(sent).status_code == 200
    message_id = sent["message"]["message_id"]
    copy_before = served_api.messages(b.id)[-1]
    assert copy_before["caption"] == "before"
    edit = a.replace_media(message_id, "photo", "AgAD-new-picture", caption="after")
    assert function_server.post(edit).status_code == 200
    copy_after = _message(served_api, b.id, copy_before["message_id"])
    assert copy_after["photo"][-1]["file_id"] == "AgAD-new-picture"
    assert copy_after["caption"] == "after"
    # A document replaced by another document, and a caption-only edit, work too.
    doc = a.media("document", caption="v1")
    function_server.post(doc)
    function_server.post(a.replace_media(doc["message"]["message_id"], "document",
                                         "BQAD-version-2", caption="v2"))
    assert served_api.messages(b.id)[-1]["document"]["file_id"] == "BQAD-version-2"
    function_server.post(a.edit(message_id, caption="after, edited"))
    assert _message(served_api, b.id, copy_before["message_id"])["caption"] == "after, edited"
