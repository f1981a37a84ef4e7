"""Erasure (/deleteme): what is deleted, what is anonymised, and what a ban keeps.

Deleted: the user's message links (sent and received), exclusions in either direction,
their lobby entry, their profile. Anonymised: every chat they were in, and every report
they made, where their id becomes a random negative tombstone id that nothing else links
to (each record its own). Kept: reports about them, for safety; and for a banned user the
banned remnant, the minimal record that keeps the ban in force (otherwise /deleteme would
lift it), the same on every backend.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from messagine.models import StoredProfile

TOMBSTONE_BITS = 62
"""Tombstone ids are drawn from -(2**62) .. -1: negative, so never a Telegram user id."""

COUNTED = ("messages", "exclusions", "lobby", "chats_anonymised", "kept_for_ban", "profile")
"""The kinds ``Repository.delete_user`` counts."""


def tombstone(draw: Callable[[int], int] = secrets.randbits) -> int:
    """A fresh random tombstone id (``draw(bits)`` gives the random bits)."""
    return -draw(TOMBSTONE_BITS) - 1


@dataclass(frozen=True, slots=True)
class AnonymisedChat:
    """A chat's users and ender after one of them was erased."""

    users: tuple[int, ...]
    ended_by: int | None


def anonymise_chat(users: Sequence[int], ended_by: int | None, user_id: int,
                   tombstone_id: int) -> AnonymisedChat | None:
    """Replace ``user_id`` by ``tombstone_id`` in a chat; None if they are not in it."""
    if user_id not in users:
        return None
    return AnonymisedChat(
        tuple(tombstone_id if u == user_id else u for u in users),
        tombstone_id if ended_by == user_id else ended_by)


def banned_remnant(user_id: int) -> StoredProfile:
    """The record kept for a banned user who erased their data: the id and the ban.

    Everything else is reset: no name, no dates, no settings, no lobby entry and no
    reminder (nothing in it is about the person but the fact of the ban).
    """
    return StoredProfile(
        user_id=user_id, first_name="", last_name=None, username=None, language_code=None,
        language="en", first_seen=0.0, last_seen=0.0, blocked=False, banned=True,
        reminders_enabled=False, nudge_pending=False)


def kept_after_erasure(user_id: int, banned: bool) -> StoredProfile | None:
    """What of the user's own record survives /deleteme: the remnant if banned, else nothing."""
    return banned_remnant(user_id) if banned else None
