"""A fake Telegram Bot API: a real HTTP server on 127.0.0.1 that keeps a model of the chats.

It answers the Bot API methods the bot uses with realistic results (Message objects,
message ids increasing per chat and shared by both sides as in a private chat, MessageId
for copyMessage, an album kept together by copyMessages), records every call, and can be
told to fail: 403 for a user who blocked the bot, or any status (429 with retry_after,
5xx, a hang) for a method and/or chat.

``FakeUser`` builds the updates a Telegram client would produce (text, media, replies,
edits, button presses, blocking the bot) and puts the user's own messages into the model,
so copies can be checked against their originals. Tests use it; so can a local sandbox.
"""

from __future__ import annotations

import copy
import email.message
import email.policy
import itertools
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

JsonObject = dict[str, Any]

# Fields of a message that are its content: what copyMessage copies.
MESSAGE_META = frozenset({
    "message_id", "message_thread_id", "from", "sender_chat", "date", "chat",
    "forward_origin", "is_topic_message", "is_automatic_forward", "reply_to_message",
    "external_reply", "quote", "reply_to_story", "via_bot", "edit_date",
    "has_protected_content", "is_from_offline", "media_group_id", "author_signature",
    "reply_markup", "business_connection_id", "sender_business_bot", "effect_id",
    "forward_from", "forward_from_chat", "forward_from_message_id", "forward_signature",
    "forward_sender_name", "forward_date", "bot_reaction", "user_reaction",
})
"""What describes a message rather than being its content: never part of a copy."""

NOT_COPYABLE = frozenset({
    "game", "invoice", "successful_payment", "refunded_payment", "giveaway", "giveaway_winners",
    "giveaway_created", "giveaway_completed", "paid_media", "gift", "unique_gift",
    "new_chat_members", "left_chat_member", "new_chat_title", "new_chat_photo",
    "delete_chat_photo", "group_chat_created", "supergroup_chat_created",
    "channel_chat_created", "migrate_to_chat_id", "migrate_from_chat_id", "pinned_message",
    "users_shared", "chat_shared", "write_access_allowed", "web_app_data",
    "proximity_alert_triggered", "message_auto_delete_timer_changed", "chat_background_set",
    "boost_added", "connected_website", "passport_data", "checklist_tasks_done",
    "checklist_tasks_added", "forum_topic_created", "video_chat_started",
})
"""Content Telegram refuses to copy (copyMessage: service messages, invoices, giveaways,
paid media; the fake's list of the ones a private chat can carry)."""

REACTION_EMOJI = frozenset(
    "👍👎❤🔥🥰👏😁🤔🤯😱🤬😢🎉🤩🤮💩🙏👌🕊🤡🥱🥴😍🐳🌚🌭💯🤣⚡🍌🏆💔🤨😐"
    "🍓🍾💋🖕😈😴😭🤓👻🎃🙈😇😨🤝🤗🫡🎅🎄☃💅🤪🗿🆒💘🙉🦄😘💊🙊😎👾🤷😡"
) | {"\u2764\u200d\U0001f525", "\U0001f468\u200d\U0001f4bb"}
"""The standard emoji Telegram accepts as reactions (the bot's allowed set)."""

CONTENT_FIELDS = (
    "text", "entities", "caption", "caption_entities", "photo", "video", "animation",
    "document", "audio", "voice", "video_note", "sticker", "location", "venue", "contact",
    "dice", "poll", "link_preview_options", "has_media_spoiler",
)
_JSON_PARAMS = ("reply_markup", "entities", "caption_entities", "reply_parameters", "commands",
                "allowed_updates", "scope", "link_preview_options", "message_ids", "reaction",
                "media")
_INT_PARAMS = ("chat_id", "from_chat_id", "message_id", "reply_to_message_id", "offset",
               "limit", "max_connections")


@dataclass
class ApiCall:
    """One request the bot made: the method, its decoded parameters and the HTTP status."""

    method: str
    params: JsonObject
    status: int = 200
    at: float = field(default_factory=time.time)
    query: str = ""
    """The URL's query string: parameters there would show in proxy and error logs."""

    @property
    def chat_id(self) -> int | None:
        """The target chat, where the method has one."""
        value = self.params.get("chat_id")
        return value if isinstance(value, int) else None


@dataclass
class FailureRule:
    """Answer ``status`` (or hang ``delay`` seconds) to matching calls, ``times`` times.

    ``share``: the rule applies to about this fraction of the matching calls, at random
    (fault runs); ``status`` 200 with a ``delay`` is a slow Telegram that does the call.
    """

    method: str | None
    chat_id: int | None
    status: int
    description: str
    retry_after: int | None
    times: int | None
    delay: float = 0.0
    share: float = 1.0
    hits: int = 0

    def matches(self, method: str, params: JsonObject, draw: float = 0.0) -> bool:
        """True when the rule applies to this call and has uses left."""
        return ((self.method is None or self.method == method)
                and (self.chat_id is None or self.chat_id == params.get("chat_id"))
                and (self.times is None or self.times > 0)
                and draw < self.share)


class _Server(ThreadingHTTPServer):
    # Many function threads call at once; the default backlog of 5 refuses connections.
    request_queue_size = 256


class _ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


class FakeBotApi:
    """The fake server and its model of every chat. Use as a context manager or start/stop."""

    def __init__(
        self, token: str = "424242:TEST-token-for-the-fake-bot-api-0000",
        host: str = "127.0.0.1", port: int = 0, username: str = "MessagineTestBot",
    ) -> None:
        self.token = token
        self.bot_user: JsonObject = {
            "id": int(token.split(":", maxsplit=1)[0]), "is_bot": True, "first_name": "Messagine",
            "username": username, "can_join_groups": False,
            "can_read_all_group_messages": False, "supports_inline_queries": False,
        }
        self._lock = threading.RLock()
        self.calls: list[ApiCall] = []
        self.rules: list[FailureRule] = []
        self._random = random.Random(0)  # noqa: S311 - fault injection, not a secret
        self.blocked: set[int] = set()
        self.chats: dict[int, dict[int, JsonObject]] = {}
        self._next_message_id: dict[int, int] = {}
        self.arrivals: dict[tuple[int, int], tuple[int, float, float]] = {}
        """(chat, message id) -> (arrival sequence over all chats, time.time() it appeared,
        time.time() the request that made it came in): to compare with when a chat started
        and ended (the simulator). A user's own message came in when it appeared."""
        self._arrival_sequence = itertools.count(1)
        self._request = threading.local()
        self._update_ids = itertools.count(1)
        self.pending_updates: list[JsonObject] = []
        self.commands: dict[str, list[JsonObject]] = {}
        self.webhook: JsonObject = {"url": "", "has_custom_certificate": False,
                                    "pending_update_count": 0}
        self._server = _Server((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- server lifecycle ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give the bot as TELEGRAM_API_URL."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeBotApi:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------------------

    def fail(
        self, method: str | None = None, chat_id: int | None = None, status: int = 500,
        description: str | None = None, retry_after: int | None = None,
        times: int | None = 1, delay: float = 0.0, share: float = 1.0,
    ) -> FailureRule:
        """Make matching calls fail (or first hang ``delay`` s); ``times=None``: always.

        ``share``: only about this fraction of matching calls, drawn at random.
        """
        default = {403: "Forbidden: bot was blocked by the user",
                   429: f"Too Many Requests: retry after {retry_after}",
                   400: "Bad Request"}.get(status, "Internal Server Error")
        rule = FailureRule(method, chat_id, status, description or default, retry_after, times,
                           delay, share)
        with self._lock:
            self.rules.append(rule)
        return rule

    def forget(self, rule: FailureRule) -> None:
        """Drop one failure rule (if it is still there)."""
        with self._lock:
            # By identity: rules are dataclasses, and two may be equal.
            self.rules[:] = [r for r in self.rules if r is not rule]

    def clear_failures(self) -> None:
        """Forget every failure rule."""
        with self._lock:
            self.rules.clear()

    def reset_calls(self) -> None:
        """Forget the recorded calls (the chats stay)."""
        with self._lock:
            self.calls.clear()

    def calls_of(self, method: str, chat_id: int | None = None) -> list[ApiCall]:
        """The successful calls of ``method`` (to ``chat_id`` if given)."""
        with self._lock:
            return [c for c in self.calls if c.method == method and c.status == 200
                    and (chat_id is None or c.chat_id == chat_id)]

    def user(self, user_id: int, first_name: str = "Test", *, language_code: str | None = "en",
             username: str | None = None, last_name: str | None = None) -> FakeUser:
        """A Telegram user who talks to the bot in a private chat."""
        return FakeUser(self, user_id, first_name, language_code, username, last_name)

    def next_update_id(self) -> int:
        """A fresh update id."""
        with self._lock:
            return next(self._update_ids)

    def messages(self, chat_id: int) -> list[JsonObject]:
        """Every message in a private chat, oldest first (deleted ones are gone).

        A reply's quote shows its message as it is now, after any edit, as a client does.
        """
        with self._lock:
            chat = self.chats.get(chat_id, {})
            shown = []
            for _, stored in sorted(chat.items()):
                message = copy.deepcopy(stored)
                quoted = message.get("reply_to_message")
                if isinstance(quoted, dict) and quoted.get("message_id") in chat:
                    message["reply_to_message"] = _without_reply(chat[quoted["message_id"]])
                shown.append(message)
            return shown

    # -- the model -----------------------------------------------------------------------

    def _new_message(self, chat_id: int, sender: JsonObject, content: JsonObject) -> JsonObject:
        with self._lock:
            message_id = self._next_message_id.get(chat_id, 1)
            self._next_message_id[chat_id] = message_id + 1
            message = {"message_id": message_id, "from": sender, "date": int(time.time()),
                       "chat": {"id": chat_id, "type": "private"}, **content}
            self.chats.setdefault(chat_id, {})[message_id] = message
            now = time.time()
            requested = getattr(self._request, "received_at", now)
            self.arrivals[(chat_id, message_id)] = (next(self._arrival_sequence), now,
                                                    requested)
            return message

    def _message(self, chat_id: int, message_id: int, missing: str) -> JsonObject:
        message = self.chats.get(chat_id, {}).get(message_id)
        if message is None:
            raise _ApiError(400, f"Bad Request: {missing}")
        return message

    # -- the methods ---------------------------------------------------------------------

    def _dispatch(self, method: str, params: JsonObject, rule: FailureRule | None) -> Any:
        if rule is not None and rule.status != 200:
            raise _ApiError(rule.status, rule.description, rule.retry_after)
        handler = getattr(self, "_m_" + method, None)
        if handler is None:
            raise _ApiError(404, "Not Found: method not found")
        chat_id = params.get("chat_id")
        if isinstance(chat_id, int) and chat_id in self.blocked and method != "getChat":
            raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return handler(params)

    def _reply_target(self, chat_id: int, params: JsonObject) -> JsonObject:
        reply = params.get("reply_parameters") or {}
        target = reply.get("message_id") or params.get("reply_to_message_id")
        if target is None:
            return {}
        if target in self.chats.get(chat_id, {}):
            return {"reply_to_message": _without_reply(self.chats[chat_id][target])}
        if reply.get("allow_sending_without_reply"):
            return {}
        raise _ApiError(400, "Bad Request: message to be replied not found")

    def _m_getMe(self, params: JsonObject) -> JsonObject:  # noqa: N802 - Bot API names
        return self.bot_user

    def _m_sendMessage(self, params: JsonObject) -> JsonObject:  # noqa: N802
        chat_id, text = params["chat_id"], params.get("text", "")
        if not text or len(text) > 4096:
            raise _ApiError(400, "Bad Request: message text is empty or too long")
        content: JsonObject = {"text": text, **self._reply_target(chat_id, params)}
        for key in ("entities", "reply_markup"):
            if params.get(key):
                content[key] = params[key]
        return self._new_message(chat_id, self.bot_user, content)

    def _m_copyMessage(self, params: JsonObject) -> JsonObject:  # noqa: N802
        source = self._message(params["from_chat_id"], params["message_id"],
                               "message to copy not found")
        # As Telegram: service messages, invoices, giveaways and paid media cannot be
        # copied, nor a quiz whose right answer the bot was not told.
        if not self._copyable(source):
            raise _ApiError(400, "Bad Request: message can't be copied")
        content = self._content(source)
        content.update(self._reply_target(params["chat_id"], params))
        message = self._new_message(params["chat_id"], self.bot_user, content)
        return {"message_id": message["message_id"]}

    def _m_copyMessages(self, params: JsonObject) -> list[JsonObject]:  # noqa: N802
        ids = params["message_ids"]
        if (not isinstance(ids, list) or not 1 <= len(ids) <= 100
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            raise _ApiError(400, "Bad Request: message_ids must be 1-100 message identifiers")
        if any(later <= earlier for earlier, later in itertools.pairwise(ids)):
            raise _ApiError(400, "Bad Request: message identifiers must be in increasing order")
        # As Telegram: what cannot be found or copied is skipped; an album stays an album.
        sources = [m for m in (self.chats.get(params["from_chat_id"], {}).get(i) for i in ids)
                   if m is not None and self._copyable(m)]
        if not sources:
            raise _ApiError(400, "Bad Request: there are no messages to copy")
        group = f"copy-{time.time_ns()}"
        copies = []
        for source in sources:
            content = self._content(source)
            if source.get("media_group_id") is not None:
                content["media_group_id"] = group
            copies.append({"message_id": self._new_message(
                params["chat_id"], self.bot_user, content)["message_id"]})
        return copies

    @staticmethod
    def _content(source: JsonObject) -> JsonObject:
        content = {k: copy.deepcopy(v) for k, v in source.items() if k not in MESSAGE_META}
        if isinstance(content.get("location"), dict):  # a copy never stays live
            content["location"] = {k: v for k, v in content["location"].items()
                                   if k in ("latitude", "longitude")}
        return content

    @staticmethod
    def _copyable(source: JsonObject) -> bool:
        content = {k: v for k, v in source.items() if k not in MESSAGE_META}
        poll = content.get("poll")
        quiz_unknown = (isinstance(poll, dict) and poll.get("type") == "quiz"
                        and "correct_option_id" not in poll)
        return bool(content) and not quiz_unknown and not any(k in NOT_COPYABLE
                                                               for k in content)

    def _edit(self, params: JsonObject, field_name: str, entities_name: str) -> JsonObject:
        message = self._message(params["chat_id"], params["message_id"],
                                "message to edit not found")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _ApiError(400, "Bad Request: message can't be edited")
        new_value = params.get(field_name)
        new_markup = params.get("reply_markup")
        if (new_value == message.get(field_name)
                and params.get(entities_name) == message.get(entities_name)
                and new_markup == message.get("reply_markup")):
            raise _ApiError(400, "Bad Request: message is not modified")
        message[field_name] = new_value
        for key, value in ((entities_name, params.get(entities_name)),
                           ("reply_markup", new_markup)):
            if value:
                message[key] = value
            else:
                message.pop(key, None)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_editMessageText(self, params: JsonObject) -> JsonObject:  # noqa: N802
        message = self._message(params["chat_id"], params["message_id"],
                                "message to edit not found")
        if "text" not in message:
            raise _ApiError(400, "Bad Request: there is no text in the message to edit")
        return self._edit(params, "text", "entities")

    def _m_editMessageCaption(self, params: JsonObject) -> JsonObject:  # noqa: N802
        return self._edit(params, "caption", "caption_entities")

    def _m_editMessageReplyMarkup(self, params: JsonObject) -> JsonObject:  # noqa: N802
        message = self._message(params["chat_id"], params["message_id"],
                                "message to edit not found")
        markup = params.get("reply_markup")
        if markup and markup.get("inline_keyboard"):
            message["reply_markup"] = markup
        else:
            message.pop("reply_markup", None)
        return copy.deepcopy(message)

    def _m_sendLocation(self, params: JsonObject) -> JsonObject:  # noqa: N802
        location = _location(params)
        if not -90 <= float(location.get("latitude", 999)) <= 90 or not (
                -180 <= float(location.get("longitude", 999)) <= 180):
            raise _ApiError(400, "Bad Request: wrong location")
        period = location.get("live_period")
        if period is not None and not (60 <= int(period) <= 86400 or int(period) == 0x7FFFFFFF):
            raise _ApiError(400, "Bad Request: wrong live period specified")
        content: JsonObject = {"location": location,
                               **self._reply_target(params["chat_id"], params)}
        return self._new_message(params["chat_id"], self.bot_user, content)

    def _live_location(self, params: JsonObject) -> JsonObject:
        message = self._message(params["chat_id"], params["message_id"],
                                "message to edit not found")
        location = message.get("location")
        if (message.get("from", {}).get("id") != self.bot_user["id"]
                or not isinstance(location, dict) or "live_period" not in location):
            raise _ApiError(400, "Bad Request: message can't be edited")
        if location.get("stopped"):
            raise _ApiError(400, "Bad Request: message can't be edited")
        return message

    def _m_editMessageLiveLocation(self, params: JsonObject) -> JsonObject:  # noqa: N802
        message = self._live_location(params)
        moved = {k: v for k, v in _location(params).items() if k != "live_period"}
        if all(message["location"].get(k) == v for k, v in moved.items()):
            raise _ApiError(400, "Bad Request: message is not modified")
        message["location"].update(moved)
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_stopMessageLiveLocation(self, params: JsonObject) -> JsonObject:  # noqa: N802
        message = self._live_location(params)
        message["location"]["stopped"] = True  # the model's mark; Telegram shows it ended
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_setMessageReaction(self, params: JsonObject) -> bool:  # noqa: N802
        message = self._message(params["chat_id"], params["message_id"],
                                "message to react to not found")
        reaction = params.get("reaction") or []
        if len(reaction) > 1:  # as Telegram: a bot, like a non-premium user, sets one
            raise _ApiError(400, "Bad Request: REACTIONS_TOO_MANY")
        if any(r.get("type") != "emoji" or r.get("emoji") not in REACTION_EMOJI
               for r in reaction):
            raise _ApiError(400, "Bad Request: REACTION_INVALID")
        emoji = [r["emoji"] for r in reaction]
        if emoji:
            message["bot_reaction"] = emoji
        else:
            message.pop("bot_reaction", None)
        return True

    def _m_editMessageMedia(self, params: JsonObject) -> JsonObject:  # noqa: N802
        message = self._message(params["chat_id"], params["message_id"],
                                "message to edit not found")
        media = params.get("media") or {}
        kind, file_id = media.get("type"), media.get("media")
        if message.get("from", {}).get("id") != self.bot_user["id"]:
            raise _ApiError(400, "Bad Request: message can't be edited")
        if kind not in ("photo", "video", "animation", "audio", "document") or not file_id:
            raise _ApiError(400, "Bad Request: wrong media")
        if not any(k in message for k in ("photo", "video", "animation", "audio", "document")):
            raise _ApiError(400, "Bad Request: there is no media in the message to edit")
        current = message.get(kind)
        current_id = (current[-1] if isinstance(current, list) and current else
                      current or {}).get("file_id")
        if current_id == file_id and media.get("caption") == message.get("caption"):
            raise _ApiError(400, "Bad Request: message is not modified")
        for key in ("photo", "video", "animation", "audio", "document", "caption",
                    "caption_entities"):
            message.pop(key, None)
        item = {"file_id": file_id, "file_unique_id": "u-" + file_id[-8:]}
        message[kind] = [item] if kind == "photo" else item
        if media.get("caption"):
            message["caption"] = media["caption"]
        if media.get("caption_entities"):
            message["caption_entities"] = media["caption_entities"]
        message["edit_date"] = int(time.time())
        return copy.deepcopy(message)

    def _m_deleteMessage(self, params: JsonObject) -> bool:  # noqa: N802
        self._message(params["chat_id"], params["message_id"], "message to delete not found")
        del self.chats[params["chat_id"]][params["message_id"]]
        return True

    def _m_answerCallbackQuery(self, params: JsonObject) -> bool:  # noqa: N802
        return True

    def _m_leaveChat(self, params: JsonObject) -> bool:  # noqa: N802
        return True

    def _m_setMyCommands(self, params: JsonObject) -> bool:  # noqa: N802
        self.commands[params.get("language_code") or ""] = params.get("commands") or []
        return True

    def _m_getMyCommands(self, params: JsonObject) -> list[JsonObject]:  # noqa: N802
        return self.commands.get(params.get("language_code") or "", [])

    def _m_deleteMyCommands(self, params: JsonObject) -> bool:  # noqa: N802
        self.commands.pop(params.get("language_code") or "", None)
        return True

    def _m_setWebhook(self, params: JsonObject) -> bool:  # noqa: N802
        self.webhook = {"url": params.get("url", ""), "has_custom_certificate": False,
                        "pending_update_count": 0,
                        "max_connections": params.get("max_connections"),
                        "allowed_updates": params.get("allowed_updates")}
        return True

    def _m_deleteWebhook(self, params: JsonObject) -> bool:  # noqa: N802
        self.webhook = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
        return True

    def _m_getWebhookInfo(self, params: JsonObject) -> JsonObject:  # noqa: N802
        return self.webhook

    def _m_getUpdates(self, params: JsonObject) -> list[JsonObject]:  # noqa: N802
        offset = params.get("offset") or 0
        with self._lock:
            self.pending_updates = [u for u in self.pending_updates if u["update_id"] >= offset]
            return list(self.pending_updates[: params.get("limit") or 100])

    def document(self, chat_id: int, message_id: int) -> tuple[str, bytes] | None:
        """The name and bytes of a file the bot sent (sendDocument), if that message has one."""
        with self._lock:
            document = self.chats.get(chat_id, {}).get(message_id, {}).get("document")
            if not isinstance(document, dict) or "content" not in document:
                return None
            return str(document["file_name"]), str(document["content"]).encode("latin-1")

    def _m_sendDocument(self, params: JsonObject) -> JsonObject:  # noqa: N802
        document = params.get("document")
        if not isinstance(document, dict):
            raise _ApiError(400, "Bad Request: there is no document in the request")
        content: JsonObject = {"document": {
            "file_id": f"doc-{time.time_ns()}", "file_unique_id": f"u{time.time_ns()}",
            "file_name": document["file_name"], "file_size": len(document["content"])}}
        if params.get("caption"):
            content["caption"] = params["caption"]
        message = self._new_message(params["chat_id"], self.bot_user, content)
        message["document"]["content"] = document["content"]
        return message

    # -- HTTP ----------------------------------------------------------------------------

    def handle_request(self, path: str, content_type: str, body: bytes) -> tuple[int, JsonObject]:
        """Answer one Bot API request (``/bot<token>/<method>``) as Telegram would."""
        self._request.received_at = time.time()
        parts = urlsplit(path)
        segments = parts.path.strip("/").split("/")
        if len(segments) != 2 or segments[0] != "bot" + self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = segments[1]
        params = _decode_params(parts.query, content_type, body)
        with self._lock:
            rule = next((r for r in self.rules
                         if r.matches(method, params, self._random.random())), None)
            if rule is not None:
                rule.hits += 1
                if rule.times is not None:
                    rule.times -= 1
        if rule is not None and rule.delay:
            time.sleep(rule.delay)
        try:
            with self._lock:
                try:
                    result = self._dispatch(method, params, rule)
                except (KeyError, TypeError, ValueError) as error:
                    # A required parameter is missing or malformed (or the body was cut
                    # short by a client that died mid-request): Telegram answers 400.
                    raise _ApiError(400, f"Bad Request: {type(error).__name__} {error}") \
                        from None
        except _ApiError as error:
            answer: JsonObject = {"ok": False, "error_code": error.status,
                                  "description": error.description}
            if error.retry_after is not None:
                answer["parameters"] = {"retry_after": error.retry_after}
            self._record(ApiCall(method, params, error.status, query=parts.query))
            return error.status, answer
        self._record(ApiCall(method, params, 200, query=parts.query))
        return 200, {"ok": True, "result": result}

    def _record(self, call: ApiCall) -> None:
        with self._lock:
            self.calls.append(call)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, answer = api.handle_request(
                    self.path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the bot gave up waiting (a simulated timeout): nobody to answer

            do_GET = do_POST = _serve  # noqa: N815 - http.server's naming

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _decode_params(query: str, content_type: str, body: bytes) -> JsonObject:
    raw: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if content_type.startswith("application/x-www-form-urlencoded"):
        raw.update(parse_qsl(body.decode(), keep_blank_values=True))
    elif content_type.startswith("application/json") and body:
        raw.update(json.loads(body))
    elif content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        assert isinstance(message, email.message.EmailMessage)  # noqa: S101 - policy HTTP
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)  # noqa: S101 - a leaf part decodes to bytes
            filename = part.get_filename()
            if filename is not None:
                raw[str(name)] = {"file_name": filename, "content": payload.decode("latin-1")}
            else:
                raw[str(name)] = payload.decode()
    params: JsonObject = {}
    for key, value in raw.items():
        if key in _JSON_PARAMS and isinstance(value, str):
            params[key] = json.loads(value)
        elif key in _INT_PARAMS and isinstance(value, str) and value.lstrip("-").isdigit():
            params[key] = int(value)
        else:
            params[key] = value
    return params


def _location(params: JsonObject) -> JsonObject:
    """A location's fields from form parameters, typed as Telegram stores them."""
    types = {"latitude": float, "longitude": float, "live_period": int, "heading": int,
             "horizontal_accuracy": float, "proximity_alert_radius": int}
    try:
        return {key: cast(params[key]) for key, cast in types.items()
                if params.get(key) is not None}
    except ValueError as error:
        raise _ApiError(400, "Bad Request: wrong location") from error


def _without_reply(message: JsonObject) -> JsonObject:
    return {k: copy.deepcopy(v) for k, v in message.items() if k != "reply_to_message"}


# Sample content a client would send: what tests and the sandbox use.
SAMPLE_CONTENT: dict[str, JsonObject] = {
    "photo": {"photo": [
        {"file_id": "AgAD-photo-small", "file_unique_id": "ph1", "width": 90, "height": 67,
         "file_size": 1200},
        {"file_id": "AgAD-photo-large", "file_unique_id": "ph2", "width": 1280, "height": 960,
         "file_size": 81200}]},
    "video": {"video": {"file_id": "BAAD-video", "file_unique_id": "vi1", "width": 640,
                        "height": 360, "duration": 12, "mime_type": "video/mp4"}},
    "animation": {"animation": {"file_id": "CgAD-gif", "file_unique_id": "an1", "width": 320,
                                "height": 240, "duration": 3},
                  "document": {"file_id": "CgAD-gif", "file_unique_id": "an1"}},
    "document": {"document": {"file_id": "BQAD-doc", "file_unique_id": "do1",
                              "file_name": "notes.pdf", "mime_type": "application/pdf"}},
    "audio": {"audio": {"file_id": "CQAD-audio", "file_unique_id": "au1", "duration": 200,
                        "title": "Song", "performer": "Band"}},
    "voice": {"voice": {"file_id": "AwAD-voice", "file_unique_id": "vo1", "duration": 4,
                        "mime_type": "audio/ogg"}},
    "video_note": {"video_note": {"file_id": "DQAD-round", "file_unique_id": "vn1",
                                  "length": 240, "duration": 5}},
    "sticker": {"sticker": {"file_id": "CAAD-sticker", "file_unique_id": "st1", "type": "regular",
                            "width": 512, "height": 512, "is_animated": False,
                            "is_video": False, "emoji": "😀"}},
    "location": {"location": {"latitude": 52.520008, "longitude": 13.404954}},
    "venue": {"location": {"latitude": 48.8584, "longitude": 2.2945},
              "venue": {"location": {"latitude": 48.8584, "longitude": 2.2945},
                        "title": "Eiffel Tower", "address": "Champ de Mars, Paris"}},
    "contact": {"contact": {"phone_number": "+15550100", "first_name": "Sam"}},
    "dice": {"dice": {"emoji": "🎲", "value": 4}},
    "poll": {"poll": {"id": "5001", "question": "Tea or coffee?", "options": [
        {"persistent_id": "0", "text": "Tea", "voter_count": 0},
        {"persistent_id": "1", "text": "Coffee", "voter_count": 0}],
        "total_voter_count": 0, "is_closed": False, "is_anonymous": True, "type": "regular",
        "allows_multiple_answers": False}},
}


class FakeUser:
    """A person in a private chat with the bot; methods return the updates they cause."""

    def __init__(self, api: FakeBotApi, user_id: int, first_name: str,
                 language_code: str | None, username: str | None, last_name: str | None
                 ) -> None:
        self.api = api
        self.id = user_id
        self.profile: JsonObject = {"id": user_id, "is_bot": False, "first_name": first_name}
        for key, value in (("last_name", last_name), ("username", username),
                           ("language_code", language_code)):
            if value is not None:
                self.profile[key] = value

    @property
    def chat(self) -> JsonObject:
        """The private chat object of this user."""
        return {"id": self.id, "type": "private", "first_name": self.profile["first_name"]}

    def _update(self, kind: str, payload: JsonObject) -> JsonObject:
        return {"update_id": self.api.next_update_id(), kind: payload}

    def send(self, content: JsonObject, reply_to: int | None = None) -> JsonObject:
        """The update for a message with ``content`` (reply to ``reply_to`` in this chat)."""
        content = copy.deepcopy(content)
        if reply_to is not None:
            with self.api._lock:
                content["reply_to_message"] = _without_reply(self.api._message(
                    self.id, reply_to, "reply target not found"))
        message = self.api._new_message(self.id, self.profile, content)
        message["chat"] = self.chat
        return self._update("message", copy.deepcopy(message))

    def text(self, text: str, reply_to: int | None = None,
             entities: list[JsonObject] | None = None) -> JsonObject:
        """The update for a text message."""
        content: JsonObject = {"text": text}
        if entities:
            content["entities"] = entities
        return self.send(content, reply_to)

    def command(self, name: str, reply_to: int | None = None) -> JsonObject:
        """The update for ``/name`` as Telegram sends it (with a bot_command entity)."""
        text = "/" + name
        return self.text(text, reply_to, [{"type": "bot_command", "offset": 0,
                                           "length": len(text.split()[0])}])

    def media(self, content_type: str, caption: str | None = None,
              reply_to: int | None = None) -> JsonObject:
        """The update for a sample message of ``content_type`` (see SAMPLE_CONTENT)."""
        content = copy.deepcopy(SAMPLE_CONTENT[content_type])
        if caption is not None:
            content["caption"] = caption
        return self.send(content, reply_to)

    def album(self, content_type: str, count: int, caption: str | None = None,
              caption_entities: list[JsonObject] | None = None,
              captions: list[str] | None = None) -> list[JsonObject]:
        """The updates of an album of ``count`` sample items, one per item as Telegram sends.

        Each item's file id ends in ``#<n>`` (1, 2, ...) so order can be checked; the first
        item carries ``caption``, as a client puts it, or each item its own ``captions``.
        """
        group = f"{self.id}{time.time_ns()}"
        updates = []
        for n in range(1, count + 1):
            content = copy.deepcopy(SAMPLE_CONTENT[content_type])
            item = content[content_type]
            for part in item if isinstance(item, list) else [item]:
                part["file_id"] += f"#{n}"
                part["file_unique_id"] += f"{n}"
            content["media_group_id"] = group
            if n == 1 and caption is not None:
                content["caption"] = caption
                if caption_entities:
                    content["caption_entities"] = caption_entities
            if captions is not None:
                content["caption"] = captions[n - 1]
            updates.append(self.send(content))
        return updates

    def edit(self, message_id: int, text: str | None = None,
             caption: str | None = None, entities: list[JsonObject] | None = None
             ) -> JsonObject:
        """The update for editing one of this user's messages (``entities``: the new text's)."""
        def change(message: JsonObject) -> None:
            if text is not None:
                message["text"] = text
                if entities:
                    message["entities"] = entities
                else:
                    message.pop("entities", None)
            if caption is not None:
                message["caption"] = caption

        return self._edited(message_id, change)

    def replace_media(self, message_id: int, content_type: str, file_id: str,
                      caption: str | None = None) -> JsonObject:
        """The update for replacing the media of one of this user's messages."""
        def change(message: JsonObject) -> None:
            for key in ("photo", "video", "animation", "audio", "document", "caption"):
                message.pop(key, None)
            item = {"file_id": file_id, "file_unique_id": "u-" + file_id[-8:]}
            message[content_type] = [item] if content_type == "photo" else item
            if caption is not None:
                message["caption"] = caption

        return self._edited(message_id, change)

    def _edited(self, message_id: int, change: Callable[[JsonObject], None]) -> JsonObject:
        with self.api._lock:
            message = self.api._message(self.id, message_id, "no such message")
            change(message)
            message["edit_date"] = int(time.time())
            edited = copy.deepcopy(message)
        edited["chat"] = self.chat
        return self._update("edited_message", edited)

    def react(self, message_id: int, emoji: str | None, before: str | None = None
              ) -> JsonObject:
        """The update for setting (or, with None, removing) a reaction on a message."""
        def reactions(value: str | None) -> list[JsonObject]:
            return [] if value is None else [{"type": "emoji", "emoji": value}]

        with self.api._lock:  # the user's app shows their own reaction under the message
            target = self.api.chats.get(self.id, {}).get(message_id)
            if target is not None and emoji is not None:
                target["user_reaction"] = [emoji]
            elif target is not None:
                target.pop("user_reaction", None)

        return self._update("message_reaction", {
            "chat": self.chat, "message_id": message_id, "user": self.profile,
            "date": int(time.time()), "old_reaction": reactions(before),
            "new_reaction": reactions(emoji)})

    def press(self, message_id: int, data: str) -> JsonObject:
        """The update for pressing the button with ``data`` under a bot message."""
        with self.api._lock:
            message = copy.deepcopy(self.api._message(
                self.id, message_id, "no such message"))
        message["chat"] = self.chat
        return self._update("callback_query", {
            "id": f"cb{time.time_ns()}", "from": self.profile, "message": message,
            "chat_instance": str(self.id * 7), "data": data})

    def press_button(self, label: str) -> JsonObject:
        """Press the newest visible button whose label contains ``label``."""
        for message in reversed(self.inbox()):
            for row in message.get("reply_markup", {}).get("inline_keyboard", []):
                for button in row:
                    if label in button["text"]:
                        return self.press(message["message_id"], button["callback_data"])
        raise LookupError(f"no button {label!r} in the chat of user {self.id}")

    def block_bot(self) -> JsonObject:
        """The my_chat_member update for blocking the bot (later sends to them get 403)."""
        self.api.blocked.add(self.id)
        return self._membership("member", "kicked")

    def unblock_bot(self) -> JsonObject:
        """The my_chat_member update for unblocking the bot."""
        self.api.blocked.discard(self.id)
        return self._membership("kicked", "member")

    def _membership(self, old: str, new: str) -> JsonObject:
        return self._update("my_chat_member", {
            "chat": self.chat, "from": self.profile, "date": int(time.time()),
            "old_chat_member": {"user": self.api.bot_user, "status": old},
            "new_chat_member": {"user": self.api.bot_user, "status": new,
                                **({"until_date": 0} if new == "kicked" else {})}})

    def inbox(self) -> list[JsonObject]:
        """The bot's messages in this chat, oldest first: what this user sees from the bot."""
        return [m for m in self.api.messages(self.id)
                if m.get("from", {}).get("id") == self.api.bot_user["id"]]

    def last(self) -> JsonObject:
        """The newest message from the bot."""
        inbox = self.inbox()
        if not inbox:
            raise LookupError(f"user {self.id} has no message from the bot")
        return inbox[-1]

    def texts(self) -> Iterator[str]:
        """The texts (or captions) of the bot's messages, oldest first."""
        for message in self.inbox():
            yield message.get("text") or message.get("caption") or ""
