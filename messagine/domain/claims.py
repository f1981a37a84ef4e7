"""Claims: whether an update is new, finished, still being processed, or abandoned.

Telegram re-sends an update when an attempt failed (an error answer, a dropped
connection, no answer within its timeout), and a dropped connection does not stop the
first attempt: it may still be running, or waiting out a 429, when the re-delivery comes.
So a claim has a state. It is opened ``in_progress`` by one attempt (its ``owner``) with a
lease that outlives the longest attempt; the attempt marks it ``done`` when it answered
200. A re-delivery of a done update needs no work (commands included); one that finds a
live lease is answered 503 with no work (Telegram tries again later and then finds it
done); only an expired lease means the first attempt died, and then this one takes over.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

REQUEST_TIMEOUT_S = 50.0
"""The function's request timeout (cloudbuild.yaml's --timeout, under Telegram's 60 s)."""
MAX_REQUEST_TIMEOUT_S = 540.0
"""The longest REQUEST_TIMEOUT_SECONDS the settings accept (an HTTP function's limit)."""


def lease_for(request_timeout_s: float) -> float:
    """A claim's lease: longer than any attempt.

    The request timeout bounds an attempt (the platform stops a request there), so a live
    lease means its attempt may still run.
    """
    return request_timeout_s + 10.0


def budget_for(request_timeout_s: float) -> float:
    """Time an update may spend waiting out 429s.

    Half the request timeout, so that the calls before and after a wait still fit in it.
    """
    return request_timeout_s / 2


LEASE_S = lease_for(REQUEST_TIMEOUT_S)


class ClaimState(enum.Enum):
    """Where an update's processing stands."""

    IN_PROGRESS = "in_progress"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Claim:
    """One update's claim as the store keeps it."""

    update_id: int
    state: ClaimState
    owner: str
    lease_until: float
    attempts: int = 1


class Decision(enum.Enum):
    """What an attempt must do with the update it received."""

    NEW = "new"
    """First seen: process it."""
    DONE = "done"
    """Finished before: answer 200, do nothing."""
    BUSY = "busy"
    """Another attempt holds a live lease: answer 503, do nothing."""
    TAKE_OVER = "take_over"
    """The attempt that held it died (its lease expired): process it again, resuming."""

    @property
    def proceeds(self) -> bool:
        """Whether this attempt processes the update."""
        return self in (Decision.NEW, Decision.TAKE_OVER)


def decide(existing: Claim | None, update_id: int, owner: str, now: float,
           lease_s: float = LEASE_S) -> tuple[Decision, Claim | None]:
    """The decision for an attempt, and the claim to store (None: store nothing)."""
    if existing is None:
        return Decision.NEW, Claim(update_id, ClaimState.IN_PROGRESS, owner, now + lease_s)
    if existing.state is ClaimState.DONE:
        return Decision.DONE, None
    if existing.lease_until > now:
        return Decision.BUSY, None
    return Decision.TAKE_OVER, Claim(update_id, ClaimState.IN_PROGRESS, owner, now + lease_s,
                                     existing.attempts + 1)

