"""Retention: when the scheduled job ends an idle chat and erases an inactive account.

A chat is idle when neither user has sent anything (a message, a command, a button) for
IDLE_CHAT_HOURS: the job ends it and tells both. An account unused for
INACTIVE_ACCOUNT_DAYS is erased as /deleteme erases it, after one notice sent
INACTIVE_NOTICE_DAYS before: the notice is due once the user has been away for the
difference, and is sent once per absence (every update makes it due again, as it does a
reminder). The erasure is due when the notice went out that long ago and the user has not
come back since. Banned users (the ban outlives erasure) and age refusals (their marker
has a period of its own, ``domain.age_gate``) are neither told nor erased here. Reports,
exclusions, ended chats and message records go by their age (``purge_expired``), but for
a report on which a moderator banned an erased user (``outlives_period``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from messagine.models import Periods, StoredProfile

HOUR = 3_600.0
DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """The times a run compares records with, from its clock and the periods."""

    active_before: float
    """A chat whose users were both last seen before this is idle."""
    notice_seen_before: float
    """A user last seen before this is due the notice."""
    noticed_before: float
    """A user noticed before this (and not back since) is due erasure."""
    erase_seen_before: float
    """...and was last seen before this (implied by the notice; checked all the same)."""


def cutoffs(now: float, periods: Periods) -> Cutoffs:
    """The cut-offs of a run at ``now``."""
    inactive_s, notice_s = periods.inactive_days * DAY, periods.notice_days * DAY
    return Cutoffs(now - periods.idle_chat_hours * HOUR, now - (inactive_s - notice_s),
                   now - notice_s, now - inactive_s)


def chat_idle(last_seen: Iterable[float], active_before: float) -> bool:
    """Neither user of a chat was seen since ``active_before``."""
    return all(seen < active_before for seen in last_seen)


@dataclass(frozen=True, slots=True)
class AccountStatus:
    """What the inactivity rules read of a user."""

    last_seen: float
    notice_pending: bool
    """Active since the last notice (set by every update, cleared by the notice)."""
    noticed_at: float | None
    banned: bool
    age_refused: bool

    @classmethod
    def of(cls, profile: StoredProfile) -> AccountStatus:
        """The status of a stored profile."""
        return cls(profile.last_seen, profile.notice_pending, profile.noticed_at,
                   profile.banned, profile.age_answer == "no")

    @property
    def kept(self) -> bool:
        """Banned or an age refusal's marker: out of these rules."""
        return self.banned or self.age_refused


def notice_due(status: AccountStatus, cut: Cutoffs) -> bool:
    """The one notice before erasure is due: away long enough, not told since."""
    return not status.kept and status.notice_pending and status.last_seen < cut.notice_seen_before


def erasure_due(status: AccountStatus, cut: Cutoffs) -> bool:
    """Told long enough ago and not back since: the account is erased."""
    return (not status.kept and not status.notice_pending and status.noticed_at is not None
            and status.noticed_at < cut.noticed_before
            and status.last_seen < cut.erase_seen_before)


def outlives_period(ban_on_return: bool | None) -> bool:
    """Whether a report is kept past REPORT_RETENTION_DAYS: one that holds a ban.

    A moderator's Ban on a report about a user who erased their data lives on that report
    (``ban_on_return``, by the protection key, ``domain.erasure``); deleting it with the
    report's age would lift the ban, as deleting the banned remnant would lift a ban made
    before the erasure. It has no expiry, like the remnant.
    """
    return bool(ban_on_return)
