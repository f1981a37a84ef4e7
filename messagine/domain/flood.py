"""The flood limit: how many updates a user may send before the bot asks them to slow down.

A pure function of the stored counters and the time, so every backend applies the same
rule inside the one storage call that opens an update (no extra round trip on a relay):
at most LIMIT updates per WINDOW seconds, the messages of one album counting as one; the
update that goes over gets one "please slow down" and starts a cooldown that doubles with
each repeat within an hour (5 s, 10 s, 20 s ... at most 5 minutes); during a cooldown every
update is dropped without an answer.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FloodRule:
    """The limit: ``limit`` updates per ``window_s`` seconds, and the cooldowns."""

    limit: int = 3
    window_s: float = 3.0
    first_cooldown_s: float = 5.0
    max_cooldown_s: float = 300.0
    strikes_forgotten_after_s: float = 3600.0

    def cooldown_for(self, strikes: int) -> float:
        """The cooldown after the ``strikes``-th flood within the memory of strikes."""
        return float(min(self.max_cooldown_s, self.first_cooldown_s * 2.0 ** (strikes - 1)))


@dataclass(frozen=True, slots=True)
class FloodState:
    """The counters stored with a user."""

    window_start: float = 0.0
    count: int = 0
    warned: bool = False
    strikes: int = 0
    last_strike: float = 0.0
    cooldown_until: float = 0.0
    last_album: str | None = None


@dataclass(frozen=True, slots=True)
class FloodVerdict:
    """What to do with this update: drop it, and whether to say "slow down" once."""

    throttled: bool
    warn: bool


def admit(
    state: FloodState, now: float, album: str | None, rule: FloodRule = FloodRule()
) -> tuple[FloodState, FloodVerdict]:
    """Count one update at ``now`` (``album``: its media_group_id) against ``rule``."""
    if now < state.cooldown_until:
        return state, FloodVerdict(throttled=True, warn=False)
    new_window = now - state.window_start >= rule.window_s
    same_album = album is not None and album == state.last_album and not new_window
    if new_window:
        window_start, count, warned = now, 1, False
    else:
        window_start, count, warned = state.window_start, state.count + (0 if same_album else 1), \
            state.warned
    if count <= rule.limit:
        return FloodState(window_start, count, warned, state.strikes, state.last_strike,
                          state.cooldown_until, album), FloodVerdict(False, False)
    if warned:
        return FloodState(window_start, count, warned, state.strikes, state.last_strike,
                          state.cooldown_until, album), FloodVerdict(True, False)
    forgotten = now - state.last_strike > rule.strikes_forgotten_after_s
    strikes = (0 if forgotten else state.strikes) + 1
    return (FloodState(window_start, count, True, strikes, now, now + rule.cooldown_for(strikes),
                       album),
            FloodVerdict(throttled=True, warn=True))
