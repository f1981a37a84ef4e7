"""Matching: who may be paired with whom, which waiting user to take, and when to resume.

Two users are compatible when they wait in the same pool (a language, or "*" for the
any-language pool, which only users who opted in enter), neither is among the other's last N
partners, neither excluded the other (a report or a block, in either direction), and
neither is banned or refused by the age gate. An exclusion binds the excluded user by
their id or, once they erased their data, by their protection key
(``messagine.domain.erasure``): a user who returns with the same Telegram id is still
kept from whoever excluded them. Blocking the bot takes a user out of the lobby; one who
searches again afterwards is evidently back, so the blocked mark does not keep them from
a partner. Of the compatible waiting users the
one waiting longest is taken (ties: the lower user id). A search that this same update
already completed (a re-delivery after a failure) resumes the chat it opened.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from messagine.models import ActiveChat, EndedChat, EndReason, MatchOutcome, MatchResult

ANY_LANGUAGE = "*"
"""The pool of users who agreed to talk to anyone, whatever the language."""


@dataclass(frozen=True, slots=True)
class Seeker:
    """A user looking for a partner, in a pool, with everyone they must not meet."""

    user_id: int
    pool: str
    avoid: frozenset[int] = frozenset()
    """Their last N partners and everyone excluded with them, in either direction."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A waiting user, as a lobby entry shows them."""

    user_id: int
    pool: str
    since: float
    avoid: frozenset[int] = frozenset()
    """Their own recent partners and exclusions, as far as the store keeps them."""
    banned: bool = False
    age_refused: bool = False
    """The waiting user's stored answer is a refusal (``domain.age_gate``)."""


Exclusion = tuple[int, int, str | None]
"""(excluder, excluded, the excluded user's protection key if they erased their data)."""


def avoided(user_id: int, recent_partners: Iterable[int], exclusions: Iterable[Exclusion],
            key: str | None = None) -> frozenset[int]:
    """Everyone ``user_id`` must not meet: their recent partners and excluded pairs.

    ``recent_partners``: the other user of each of their last N chats; ``exclusions``:
    those the store found for the user (made by them, of them, or of their protection
    ``key``); the rule decides which bind them.
    """
    others = set(recent_partners)
    for excluder, excluded, excluded_key in exclusions:
        if excluder == user_id:
            others.add(excluded)
        elif excluded == user_id or (key is not None and excluded_key == key):
            others.add(excluder)
    others.discard(user_id)
    return frozenset(others)


def recent_partners(user_id: int, chats: Iterable[Sequence[int]], limit: int) -> list[int]:
    """The partners of the user's ``limit`` newest chats; ``chats``: their users, newest first."""
    partners: list[int] = []
    for count, users in enumerate(chats):
        if count >= limit:
            break
        partners.extend(u for u in users if u != user_id)
    return partners


def compatible(seeker: Seeker, candidate: Candidate) -> bool:
    """Whether ``seeker`` may be paired with ``candidate`` (symmetric in the avoid lists)."""
    return (candidate.user_id != seeker.user_id
            and candidate.pool == seeker.pool
            and not candidate.banned
            and not candidate.age_refused
            and candidate.user_id not in seeker.avoid
            and seeker.user_id not in candidate.avoid)


def waiting_order(candidate: Candidate) -> tuple[float, int]:
    """The order in which waiting users are taken: longest waiting first, then by id."""
    return (candidate.since, candidate.user_id)


def ranked(seeker: Seeker, candidates: Iterable[Candidate]) -> list[Candidate]:
    """The candidates compatible with ``seeker``, in the order they are to be taken."""
    return sorted((c for c in candidates if compatible(seeker, c)), key=waiting_order)


def pick(seeker: Seeker, candidates: Iterable[Candidate]) -> Candidate | None:
    """The longest-waiting candidate compatible with ``seeker``, or None."""
    return min((c for c in candidates if compatible(seeker, c)), key=waiting_order,
               default=None)


def resume_search(chat: ActiveChat | None, opened_by_update: int | None,
                  update_id: int) -> MatchResult | None:
    """What a search by a user already in ``chat`` answers; None if they are in no chat.

    The chat that this same update opened is resumed (the notices are sent again); any
    other chat means the user is busy.
    """
    if chat is None:
        return None
    if opened_by_update == update_id:
        return MatchResult(MatchOutcome.MATCHED, chat, resumed=True)
    return MatchResult(MatchOutcome.IN_CHAT, chat)


def queued(was_waiting: bool, waiting_count: int) -> MatchResult:
    """What a search that found nobody answers: now waiting, or still waiting."""
    outcome = MatchOutcome.ALREADY_WAITING if was_waiting else MatchOutcome.WAITING
    return MatchResult(outcome, waiting_count=waiting_count)


def unpairable_others(result: MatchResult) -> int:
    """How many others wait in the pool of a search that queued its user.

    None of them can be paired with the user: a search takes any compatible waiting user
    (``pick``), so those still waiting are incompatible (recent partners, exclusions).
    What the user can honestly be told is that nobody pairable waits, and how many others
    do.
    """
    return max(0, result.waiting_count - 1)


def may_end(reason: EndReason, opened_by_update: int | None, update_id: int) -> bool:
    """Whether this update may end a chat that ``opened_by_update`` opened.

    A /next never ends the chat that the same update opened: its re-delivery, after the
    first attempt ended the old chat and found a new partner, resumes instead.
    """
    return not (reason is EndReason.NEXT and opened_by_update == update_id)


def end_answer(chat_id: int, partner_id: int, partner_language: str, ended_now: bool,
               closed_by_update: int | None, update_id: int) -> EndedChat | None:
    """What ending a chat answers once its end was written, or found written.

    The chat, if this update ended it now. One ended already is answered only to a
    re-delivery of the update that ended it, which resends the notices; if the partner
    ended it first, their update told both.
    """
    if not ended_now and closed_by_update != update_id:
        return None
    return EndedChat(chat_id, partner_id, partner_language, resumed=not ended_now)
