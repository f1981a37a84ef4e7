"""What an update must look like before the bot stores or acts on any of it.

The webhook's secret proves an update came from Telegram (or from whoever holds the
secret); it does not prove the update is well formed. Anything about the payload itself
(its shape, a field's type, a number no store can hold, a string that is not valid
Unicode, nesting deeper than Telegram ever sends) can never succeed however often it is
retried, so the pipeline answers it 200 with one log line instead of a 5xx that would make
Telegram re-send it for a day and hold back that chat's later updates.

``problem`` is a pure function: it names the first problem (a field path and a reason,
never the value, so no content reaches the log) or returns None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

MAX_DEPTH = 48
"""Deeper than any update Telegram sends (a reply to a message quoting another is ~10)."""

INT64 = 2**63
"""Every store keeps integers as signed 64-bit: SQLite INTEGER, BSON int64, Firestore."""

MAX_PROFILE_TEXT = 256
"""Telegram's names are at most 64 characters and language codes a few; anything longer
is not a Telegram account and is not stored."""

_USER_TEXT = ("first_name", "last_name", "username", "language_code")
_MESSAGE_TEXT = ("text", "caption", "media_group_id")


def problem(payload: Mapping[str, Any], kind: str) -> str | None:
    """Why the update ``payload`` of ``kind`` cannot be processed, or None if it can."""
    found = _walk(payload)
    if found is not None:
        return found
    update_id = payload.get("update_id")
    if not _is_int(update_id) or not 0 <= update_id < INT64:
        return "update_id: not an integer from 0 to 2^63-1"
    item = payload.get(kind)
    if not isinstance(item, Mapping):
        return f"{kind}: not an object"
    if kind == "callback_query":
        return (_user(item.get("from"), f"{kind}.from")
                or _optional_str(item, "data", kind)
                or _optional_message(item.get("message"), f"{kind}.message"))
    if kind == "message_reaction":
        user = item.get("user")
        return ((_user(user, f"{kind}.user") if user is not None else None)
                or _chat(item.get("chat"), f"{kind}.chat")
                or (None if _is_int(item.get("message_id"))
                    else f"{kind}.message_id: not an integer")
                or _reaction_list(item, "old_reaction", kind)
                or _reaction_list(item, "new_reaction", kind))
    if kind == "my_chat_member":
        return _user(item.get("from"), f"{kind}.from") or _chat(item.get("chat"), f"{kind}.chat")
    return _message(item, kind)


def _walk(payload: Mapping[str, Any]) -> str | None:
    """Depth, integer range and valid Unicode everywhere, without recursion."""
    stack: list[tuple[Any, int, str]] = [(payload, 1, "update")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return f"{path}: nested deeper than {MAX_DEPTH}"
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if not _is_unicode(key):
                    return f"{path}: a key is not valid Unicode"
                stack.append((inner, depth + 1, f"{path}.{key}"))
        elif isinstance(value, list):
            stack.extend((inner, depth + 1, f"{path}[]") for inner in value)
        elif isinstance(value, str):
            if not _is_unicode(value):
                return f"{path}: not valid Unicode (a lone surrogate)"
        elif _is_int(value) and not -INT64 <= value < INT64:
            return f"{path}: integer beyond 64 bits"
    return None


def _message(item: Mapping[str, Any], path: str) -> str | None:
    message_id = item.get("message_id")
    if not _is_int(message_id):
        return f"{path}.message_id: not an integer"
    sender = item.get("from")
    return ((_user(sender, f"{path}.from") if sender is not None else None)
            or _chat(item.get("chat"), f"{path}.chat")
            or next((p for name in _MESSAGE_TEXT
                     if (p := _optional_str(item, name, path)) is not None), None))


def _optional_message(item: Any, path: str) -> str | None:
    if item is None:
        return None
    if not isinstance(item, Mapping):
        return f"{path}: not an object"
    return _message(item, path)


def _user(user: Any, path: str) -> str | None:
    if not isinstance(user, Mapping):
        return f"{path}: not an object"
    if not _is_int(user.get("id")):
        return f"{path}.id: not an integer"
    if not isinstance(user.get("is_bot", False), bool):
        return f"{path}.is_bot: not a boolean"
    for name in _USER_TEXT:
        found = _optional_str(user, name, path, MAX_PROFILE_TEXT)
        if found is not None:
            return found
    return None


def _chat(chat: Any, path: str) -> str | None:
    if not isinstance(chat, Mapping):
        return f"{path}: not an object"
    if not _is_int(chat.get("id")):
        return f"{path}.id: not an integer"
    if not isinstance(chat.get("type"), str):
        return f"{path}.type: not a string"
    return None


def _reaction_list(item: Mapping[str, Any], name: str, path: str) -> str | None:
    value = item.get(name, [])
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        return f"{path}.{name}: not a list of reactions"
    return None


def _optional_str(item: Mapping[str, Any], name: str, path: str,
                  limit: int | None = None) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        return f"{path}.{name}: not a string"
    if limit is not None and len(value) > limit:
        return f"{path}.{name}: longer than {limit} characters"
    return None


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_unicode(value: Any) -> bool:
    if not isinstance(value, str):
        return True  # a key that is not a string cannot come out of JSON
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
