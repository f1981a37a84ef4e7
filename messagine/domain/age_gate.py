"""The age gate: who may be paired, and the marker a refusal leaves.

Every route to a partner (/find_chat, /next, the buttons, the any-language offer, a
re-delivered search) passes ``gate`` before it searches. A user who answered that they
are under the minimum age is erased at once but for the marker ``refusal_marker``: their
id, the answer and its time. It keeps the gate closed (an old Yes button cannot reopen it)
and asks for no reminders, until the scheduled job deletes it after the refusal period
(``domain.retention``).
"""

from __future__ import annotations

import enum

from messagine.models import MatchOutcome, MatchResult, StoredProfile, UserState

REFUSAL = "no"
"""The stored answer of a user under the minimum age."""


class Gate(enum.Enum):
    """What the gate says to a search."""

    OPEN = "open"
    ASK = "ask"
    """Not answered yet: ask the question first."""
    CLOSED = "closed"
    """Answered No: no partner until the marker is gone."""


def gate(user: UserState, min_age: int) -> Gate:
    """Whether ``user`` may search now (``min_age`` 0: the question is never asked).

    A refusal closes the gate whatever the setting, since the marker stands for a person
    who told us they are a child. A user already in a chat from before the question
    existed is not asked in the middle of it.
    """
    if user.age_refused:
        return Gate.CLOSED
    if min_age and not user.age_confirmed and user.chat is None:
        return Gate.ASK
    return Gate.OPEN


def refuses(age_answer: str | None) -> bool:
    """Whether a stored answer is a refusal, which closes the gate."""
    return age_answer == REFUSAL


def refused_search(refused: bool) -> MatchResult | None:
    """What a search answers for a user whose stored record is a refusal; None: go on.

    The store's own record decides, read with the search: a search that began before
    the No (a /next waiting out a 429 while an old prompt's No was pressed) must neither
    queue nor pair the marker.
    """
    return MatchResult(MatchOutcome.AGE_REFUSED) if refused else None


def answer(confirmed: bool) -> str:
    """The stored form of an answer to the age question."""
    return "yes" if confirmed else REFUSAL


def kept_answers(confirmed: bool) -> tuple[str, ...]:
    """The stored answers that this answer must not replace: a Yes never replaces a No.

    An old prompt's Yes pressed after the No, or processed at the same time as it, so
    leaves the refusal standing; a No replaces anything.
    """
    return (REFUSAL,) if confirmed else ()


def replaces(stored: str | None, confirmed: bool) -> bool:
    """Whether this answer may be written over the ``stored`` one (``kept_answers``)."""
    return stored not in kept_answers(confirmed)


def stores_profile(age_answer: str | None) -> bool:
    """Whether an update refreshes the user's stored profile (name, username, app language).

    Not for a refusal's marker: a refused user who writes again is answered (in their
    app's language, from the update itself) but stays the marker.
    """
    return age_answer != "no"


def refusal_marker(user_id: int, refused_at: float) -> StoredProfile:
    """The whole record kept of a user who answered No: the id, the answer and its time.

    No name, no language (they are answered in their Telegram app's, which each update
    carries), no dates of use; reminders and analytics off, so that every backend's
    reminder query and the analytics client already leave them out.
    """
    return StoredProfile(
        user_id=user_id, first_name="", last_name=None, username=None, language_code=None,
        language="", first_seen=0.0, last_seen=0.0, age_answer="no",
        age_answered_at=refused_at, reminders_enabled=False, nudge_pending=False,
        analytics_opt_out=True, notice_pending=False)
