"""Safety at the right moment: the rules that hold a message back until it is safe to send.

Pure: no storage and no Bot API. A contact, a location or a venue waits for its sender to
confirm; what the confirmation needs (the chat it was sent in, the message id and, for a
live location, where it started and how) travels in the Send button's callback data, so nothing
is stored while the sender decides. Links and usernames wait out the first minutes of a
chat, when spam arrives.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from messagine.envelope import Envelope, Location

CONFIRMED_KINDS = {"contact": "c", "location": "l", "venue": "v"}
"""Content types that reveal where someone is or how to reach them, by their code."""
_LIVE = "L"
_KIND_OF = {code: kind for kind, code in CONFIRMED_KINDS.items()} | {_LIVE: "location"}
_DIGITS = string.digits + string.ascii_lowercase
_SCALE = 1_000_000
"""Coordinates travel with six decimals, as Telegram gives them."""
MAX_CALLBACK_DATA = 64
"""Telegram's limit on a button's callback data, in bytes."""


@dataclass(frozen=True, slots=True)
class HeldShare:
    """A message waiting for its sender's Send: where it was sent and what it is."""

    chat_id: int
    message_id: int
    content_type: str
    live_location: Location | None = None


def needs_confirmation(message: Envelope) -> bool:
    """Whether ``message`` shares a place or a phone number (a live location too)."""
    return message.content_type in CONFIRMED_KINDS


def pack(message: Envelope, chat_id: int) -> str:
    """The Send button's argument for ``message``, sent in chat ``chat_id`` (short: base 36)."""
    location = message.location
    numbers = [chat_id, message.message_id]
    if message.live_location and location is not None:
        code = _LIVE
        numbers += [round(location.latitude * _SCALE), round(location.longitude * _SCALE),
                    location.live_period or 0, location.heading or 0,
                    round(location.horizontal_accuracy or 0),
                    location.proximity_alert_radius or 0]
    else:
        code = CONFIRMED_KINDS[message.content_type]
    return ".".join([code, *map(_base36, numbers)])


def unpack(argument: str) -> HeldShare | None:
    """The held message a Send button names; None when the data is not one ``pack`` made."""
    code, *numbers_text = argument.split(".")
    if code not in _KIND_OF or len(numbers_text) != (8 if code == _LIVE else 2):
        return None
    try:
        numbers = [int(text, 36) for text in numbers_text]
    except ValueError:
        return None
    # 0 stands for "not given": none of these is 0 in a live location that has it.
    live = (Location(numbers[2] / _SCALE, numbers[3] / _SCALE, numbers[4] or None,
                     numbers[5] or None, float(numbers[6]) if numbers[6] else None,
                     numbers[7] or None)
            if code == _LIVE else None)
    return HeldShare(numbers[0], numbers[1], _KIND_OF[code], live)


def links_held(message: Envelope, chat_started_at: float, now: float, hold_minutes: int
               ) -> bool:
    """Whether ``message`` carries a link or username within the chat's first minutes."""
    return bool(hold_minutes) and message.has_link and \
        now - chat_started_at < hold_minutes * 60.0


def _base36(number: int) -> str:
    if number < 0:
        return "-" + _base36(-number)
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = _DIGITS[digit] + text
        if not number:
            return text
