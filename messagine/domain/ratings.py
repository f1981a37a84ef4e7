"""The rating rule: a 👍 or 👎 for the partner of a chat that just ended, kept as counts.

A rating is stored only as two counts on the rated user (and whether the moderators were
told about them), never as who rated whom: nobody, the rated user included, can see who
rated them. One rating counts per chat: the rated user's record remembers the chats it
counted, for as long as a rating of them is still accepted (the report window after the
chat ended), so a second press or a re-delivered one changes nothing. A 👎 also keeps the
pair apart for good (an exclusion, as a block does), so every 👎 a user collects comes
from a different person; at ``flag_after`` of them the moderators are told, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RatingRule:
    """How long after its end a chat can be rated, and how many 👎 bring a flag."""

    window_s: float = 3600.0
    flag_after: int = 10
    """The default of RATING_FLAG_AFTER, which the settings, the policy and moderation use."""


@dataclass(frozen=True, slots=True)
class RatingState:
    """What a user's record holds: the counts, the flag, and the chats counted lately."""

    up: int = 0
    down: int = 0
    flagged: bool = False
    recent: Mapping[str, float] = field(default_factory=dict)
    """chat id (as text) -> when its rating was counted; pruned after the window."""


@dataclass(frozen=True, slots=True)
class RatingVerdict:
    """``counted``: this rating changed the counts; ``flag``: tell the moderators now."""

    counted: bool
    flag: bool = False


def may_rate(ended_at: float | None, now: float, rule: RatingRule) -> bool:
    """Whether a chat that ended at ``ended_at`` can still be rated (an active one cannot)."""
    return ended_at is not None and 0.0 <= now - ended_at <= rule.window_s


def rate(state: RatingState, chat_id: int, positive: bool, now: float, rule: RatingRule
         ) -> tuple[RatingState, RatingVerdict]:
    """Count one rating of chat ``chat_id`` at ``now``, unless that chat was counted."""
    recent = {key: at for key, at in state.recent.items() if now - at <= rule.window_s}
    key = str(chat_id)
    if key in recent:
        return state, RatingVerdict(counted=False)
    recent[key] = now
    up, down = state.up + positive, state.down + (not positive)
    flag = not positive and not state.flagged and down >= rule.flag_after
    return (RatingState(up, down, state.flagged or flag, recent),
            RatingVerdict(counted=True, flag=flag))
