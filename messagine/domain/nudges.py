"""Reminders: who is due one, who is skipped and why, and what the reminder says.

A user is due a reminder when they have been idle since before a cut-off and have been
active since their last reminder (one reminder per idle period). Of the due users those
who blocked the bot, are banned, or turned reminders off get none; the run reports how
many of each it skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from messagine.models import StoredProfile

SKIP_REASONS = ("blocked", "banned", "opted_out")


@dataclass(frozen=True, slots=True)
class NudgeStatus:
    """What the rule reads of a user."""

    last_seen: float
    nudge_pending: bool
    """Active since their last reminder (set by every update, cleared by a reminder)."""
    blocked: bool
    banned: bool
    reminders_enabled: bool

    @classmethod
    def of(cls, profile: StoredProfile) -> NudgeStatus:
        """The status of a stored profile."""
        return cls(profile.last_seen, profile.nudge_pending, profile.blocked, profile.banned,
                   profile.reminders_enabled)


def due(status: NudgeStatus, idle_before: float) -> bool:
    """Idle since before ``idle_before`` and active since the last reminder."""
    return status.nudge_pending and status.last_seen < idle_before


def skip_reason(status: NudgeStatus) -> str | None:
    """Why a due user gets no reminder (the first that applies), or None."""
    if status.blocked:
        return "blocked"
    if status.banned:
        return "banned"
    if not status.reminders_enabled:
        return "opted_out"
    return None


def claimable(status: NudgeStatus, idle_before: float) -> bool:
    """Due and not skipped: a reminder goes to this user."""
    return due(status, idle_before) and skip_reason(status) is None


def activity(in_chat: bool, waiting: bool) -> str:
    """What the reminder depends on: "chatting", "waiting" or "idle"."""
    return "chatting" if in_chat else "waiting" if waiting else "idle"
