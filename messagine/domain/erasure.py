"""Erasure (/deleteme): what is deleted, what is anonymised, and what others' safety keeps.

Deleted: the user's message links (sent and received), the exclusions they made, their
lobby entry, their profile. Anonymised: every chat they were in and every report they
made, where their id becomes a random negative tombstone id (``Tombstones``: one per
partner, so that a partner's records still name one person, and nothing links them to
another partner's). Kept, for the safety of others: the exclusions and reports other users
made about them, with the erased id replaced by that partner's tombstone and the
``protection_key`` beside it, a keyed hash (HMAC-SHA256 under the operator's secret
pepper) of the Telegram id, from which the id cannot be read back but which the same id
gives again: a user who returns is still kept from those who excluded them. And for a
banned user the banned remnant, the minimal record that keeps the ban in force (otherwise
/deleteme would lift it), the same on every backend.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from messagine.models import StoredProfile

TOMBSTONE_BITS = 62
"""Tombstone ids are drawn from -(2**62) .. -1: negative, so never a Telegram user id."""

COUNTED = ("messages", "exclusions", "lobby", "chats_anonymised", "kept_for_ban", "profile")
"""The kinds ``Repository.delete_user`` counts."""


def is_tombstone(user_id: int) -> bool:
    """Whether ``user_id`` stands for an erased user (Telegram ids are positive)."""
    return user_id < 0


def tombstone(draw: Callable[[int], int] = secrets.randbits) -> int:
    """A fresh random tombstone id (``draw(bits)`` gives the random bits)."""
    return -draw(TOMBSTONE_BITS) - 1


UNCONFIGURED_PEPPER = b"messagine: no pepper configured"
"""The pepper of a repository opened without settings (tests, tools); the settings always
give the configured one (ERASURE_PEPPER)."""


def protection_key(pepper: bytes, user_id: int) -> str:
    """The keyed hash that stands for an erased user in the protections kept for others.

    HMAC-SHA256 of the Telegram id under the secret ``pepper``: the same id always gives
    the same key, and without the pepper the key tells nothing about the id.
    """
    return hmac.new(pepper, b"user:%d" % user_id, hashlib.sha256).hexdigest()


def partner_key(partner_id: int, erased_key: str | None) -> str | None:
    """The protection key a block or report of ``partner_id`` must keep, if any.

    A chat whose user erased their data holds their key (``erased_key``) beside the
    tombstone that replaced them; a block or report made afterwards names the tombstone,
    and only the key keeps it binding if the erased user comes back. None for a live
    partner: their id binds.
    """
    return erased_key if is_tombstone(partner_id) else None


def returned(pepper: bytes, key: str, user_ids: Iterable[int]) -> list[int]:
    """The users among ``user_ids`` whose protection key is ``key``: an erased user back."""
    return [u for u in user_ids if hmac.compare_digest(protection_key(pepper, u), key)]


class Tombstones:
    """The tombstone ids of one erasure: one per partner of the erased user.

    A partner's chats, reports and exclusions then name the same person (their /mydata
    shows one partner label per chat, as before the erasure), while different partners'
    records get different ids, so nothing but the protection key links them.
    """

    def __init__(self, draw: Callable[[int], int] = secrets.randbits) -> None:
        self._draw = draw
        self._ids: dict[int, int] = {}

    def of(self, partner_id: int) -> int:
        """The tombstone that replaces the erased user in ``partner_id``'s records."""
        if partner_id not in self._ids:
            self._ids[partner_id] = tombstone(self._draw)
        return self._ids[partner_id]


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
    reminder (nothing in it is about the person but the fact of the ban). A banned user's
    later updates leave it so: each is claimed alone, as an update without a user is, and
    refreshes no profile, date or counter (every backend's ``open_update``).
    """
    return StoredProfile(
        user_id=user_id, first_name="", last_name=None, username=None, language_code=None,
        language="en", first_seen=0.0, last_seen=0.0, blocked=False, banned=True,
        reminders_enabled=False, nudge_pending=False)


def kept_after_erasure(user_id: int, banned: bool) -> StoredProfile | None:
    """What of the user's own record survives /deleteme: the remnant if banned, else nothing."""
    return banned_remnant(user_id) if banned else None
