"""A private message as the relay needs it, read from the raw update.

Telegram copies a message by chat id and message id; it does not need the bot to
understand the content. pyTelegramBotAPI does: it classifies only the content types it
knows and rejects a whole update when any required field is missing anywhere inside it
(a poll option without ``persistent_id``, a sticker without ``type``, a replied-to
message's user without ``is_bot``). So the relay reads what it needs from the JSON itself,
and a message the library cannot parse or classify is still relayed, or answered.

Pure: ``read`` takes the decoded update (already checked by messagine.payload) and builds
an ``Envelope``; ``minimal_update`` gives the library a version it can always parse, for
the commands and buttons that still go through its handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from telebot import util

_META = frozenset({
    "message_id", "message_thread_id", "from", "sender_chat", "sender_boost_count",
    "sender_business_bot", "date", "business_connection_id", "chat", "forward_origin",
    "is_topic_message", "is_automatic_forward", "reply_to_message", "external_reply", "quote",
    "reply_to_story", "via_bot", "edit_date", "has_protected_content", "is_from_offline",
    "is_paid_post", "media_group_id", "author_signature", "paid_star_count", "entities",
    "caption_entities", "link_preview_options", "effect_id", "show_caption_above_media",
    "has_media_spoiler", "reply_markup", "forward_from", "forward_from_chat",
    "forward_from_message_id", "forward_signature", "forward_sender_name", "forward_date",
    "suggested_post_info", "direct_messages_topic", "reply_to_checklist_task_id",
    "sender_tag",
})
"""Fields that describe a message rather than being its content."""

_KNOWN_CONTENT = (*util.content_type_media, *util.content_type_service, "paid_media",
                  "checklist", "refunded_payment", "live_photo")
"""Content names that may appear in logs (an unknown one is logged as "unknown")."""

SILENT_SERVICE = frozenset({
    "pinned_message", "message_auto_delete_timer_changed", "chat_background_set",
    "write_access_allowed", "proximity_alert_triggered", "new_chat_members",
    "left_chat_member", "new_chat_title", "new_chat_photo", "delete_chat_photo",
    "group_chat_created", "supergroup_chat_created", "channel_chat_created",
    "migrate_to_chat_id", "migrate_from_chat_id", "forum_topic_created",
    "forum_topic_closed", "forum_topic_reopened", "forum_topic_edited",
    "general_forum_topic_hidden", "general_forum_topic_unhidden", "video_chat_scheduled",
    "video_chat_started", "video_chat_ended", "video_chat_participants_invited",
    "boost_added", "connected_website", "passport_data", "successful_payment",
    "refunded_payment",
})
"""Service messages nobody typed (Telegram's own notes about the chat): no answer."""


LINK_ENTITIES = frozenset({"url", "text_link", "mention", "text_mention"})
"""Entity types that lead somewhere else: a link, or a username to write to."""


@dataclass(frozen=True, slots=True)
class Location:
    """A location's position; ``live_period`` is set while it is a live location."""

    latitude: float
    longitude: float
    live_period: int | None = None
    heading: int | None = None
    horizontal_accuracy: float | None = None
    proximity_alert_radius: int | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """A message's replaceable media: its kind and the file id Telegram gave it."""

    kind: str
    """photo, video, animation, document or audio (what editMessageMedia takes)."""
    file_id: str


EDITABLE_MEDIA = ("animation", "video", "audio", "document", "photo")
"""Media kinds editMessageMedia can put on a message, the most specific first (an
animation also carries a document)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One private message: who sent it, where, what it replies to and what it holds."""

    message_id: int
    chat_id: int
    chat_type: str
    sender_id: int | None
    content_type: str
    text: str | None = None
    caption: str | None = None
    reply_to_message_id: int | None = None
    media_group_id: str | None = None
    location: Location | None = None
    media: Media | None = None
    entities: tuple[str, ...] = ()
    """The types of the text's or caption's entities ("url", "mention", "bold", ...)."""

    @property
    def has_link(self) -> bool:
        """The text or caption holds a link or a username (what spam brings)."""
        return not LINK_ENTITIES.isdisjoint(self.entities)

    @property
    def silent(self) -> bool:
        """A service message nobody typed: neither relayed nor answered."""
        return self.content_type in SILENT_SERVICE

    @property
    def live_location(self) -> bool:
        """A live location (its copy must be live too, and follow every move)."""
        return self.location is not None and self.location.live_period is not None


def read(message: Mapping[str, Any]) -> Envelope:
    """The envelope of a message object (``update["message"]`` or an edited one)."""
    chat = message["chat"]
    sender = message.get("from")
    reply = message.get("reply_to_message")
    text, caption = message.get("text"), message.get("caption")
    return Envelope(
        message_id=message["message_id"], chat_id=chat["id"], chat_type=chat["type"],
        sender_id=sender["id"] if isinstance(sender, Mapping) else None,
        content_type=content_type(message),
        text=text if isinstance(text, str) else None,
        caption=caption if isinstance(caption, str) else None,
        reply_to_message_id=_message_id(reply),
        media_group_id=message.get("media_group_id"),
        location=_location(message.get("location")) if "venue" not in message else None,
        media=_media(message),
        entities=_entity_types(message.get("entities")) + _entity_types(
            message.get("caption_entities")),
    )


def content_type(message: Mapping[str, Any]) -> str:
    """The message's content type: a name Telegram uses, or "unknown" for anything else."""
    # The last match in the library's order wins, as in the library: an animation also
    # carries a document, a venue a location.
    found = [name for name in _KNOWN_CONTENT if name in message]
    if found:
        return found[-1]
    return "unknown" if any(k not in _META for k in message) else "empty"


def minimal_update(update_id: int, kind: str, message: Mapping[str, Any]) -> dict[str, Any]:
    """The update cut down to what any pyTelegramBotAPI can parse: ids, sender, chat, text.

    For a message whose content or nested fields the library rejects; the relay works
    from the envelope, so nothing is lost by what the library does not see.
    """
    chat, sender = message["chat"], message.get("from")
    kept: dict[str, Any] = {"message_id": message["message_id"], "date": 0,
                            "chat": {"id": chat["id"], "type": chat["type"]}}
    if isinstance(sender, Mapping):
        kept["from"] = {key: sender[key] for key in
                        ("id", "first_name", "last_name", "username", "language_code")
                        if key in sender} | {"is_bot": bool(sender.get("is_bot", False))}
        kept["from"].setdefault("first_name", "")
    for key in ("text", "caption"):
        if isinstance(message.get(key), str):
            kept[key] = message[key]
    reply_id = _message_id(message.get("reply_to_message"))
    if reply_id is not None:
        kept["reply_to_message"] = {"message_id": reply_id, "date": 0, "chat": kept["chat"]}
    return {"update_id": update_id, kind: kept}


def _message_id(message: Any) -> int | None:
    if isinstance(message, Mapping) and isinstance(message.get("message_id"), int):
        return int(message["message_id"])
    return None


def _media(message: Mapping[str, Any]) -> Media | None:
    for kind in EDITABLE_MEDIA:
        value = message.get(kind)
        if kind == "photo" and isinstance(value, list) and value:
            value = value[-1]  # the largest size
        if isinstance(value, Mapping) and isinstance(value.get("file_id"), str):
            return Media(kind, value["file_id"])
    return None


def _entity_types(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(item["type"]) for item in value
                 if isinstance(item, Mapping) and isinstance(item.get("type"), str))


def _location(value: Any) -> Location | None:
    if not isinstance(value, Mapping):
        return None
    latitude, longitude = value.get("latitude"), value.get("longitude")
    if not isinstance(latitude, int | float) or not isinstance(longitude, int | float):
        return None

    def number(name: str) -> Any:
        found = value.get(name)
        return found if isinstance(found, int | float) and not isinstance(found, bool) else None

    return Location(float(latitude), float(longitude), number("live_period"),
                    number("heading"), number("horizontal_accuracy"),
                    number("proximity_alert_radius"))
