"""The flood rule: which updates of a user are dropped because they come too fast.

A token bucket, as a pure function of the stored counters and the time, so every backend
applies the same rule inside the one storage call that opens an update (no extra round
trip on a relay). A user may send a burst of up to ``limit`` updates at once; the bucket
refills at one update per ``refill_s`` seconds, so only sustained sending faster than that
is limited. An update that finds the bucket empty is dropped and costs nothing (the bucket
drains while the user waits), and the sender is told which one did not arrive; the items
of one album count once. docs/design.md ("The flood rule") says why the numbers are what
they are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FloodRule:
    """A burst of ``limit`` updates, then one per ``refill_s`` seconds."""

    limit: int = 8
    refill_s: float = 1.0


@dataclass(frozen=True, slots=True)
class FloodState:
    """The counters stored with a user: the bucket's level (updates it holds) at ``at``."""

    level: float = 0.0
    at: float = 0.0
    last_album: str | None = None


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    """What to do with this update: drop it (``throttled``), and tell the sender (``warn``)."""

    throttled: bool
    warn: bool


def admit(
    state: FloodState, now: float, album: str | None, rule: FloodRule = FloodRule()
) -> tuple[FloodState, FloodVerdict]:
    """Count one update at ``now`` (``album``: its media_group_id) against ``rule``.

    A clock that goes back (another instance's clock, a stored time from the future)
    drains nothing rather than filling the bucket.
    """
    level = max(0.0, state.level - max(0.0, now - state.at) / rule.refill_s)
    at = max(state.at, now)
    cost = 0.0 if album is not None and album == state.last_album else 1.0
    if level + cost <= rule.limit:
        return FloodState(level + cost, at, album), FloodVerdict(throttled=False, warn=False)
    return FloodState(level, at, state.last_album), FloodVerdict(throttled=True, warn=True)
