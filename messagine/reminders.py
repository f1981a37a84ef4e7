"""Reminders and lobby hygiene: the scheduled job behind the ``reminders`` entry point.

Cloud Scheduler calls it every few minutes. A run first deletes records past their
retention, in bounded batches within a share of its budget (never in a user's request),
then ends chats idle for IDLE_CHAT_HOURS (both told), sends the one notice before an
inactive account's erasure and erases the accounts noticed INACTIVE_NOTICE_DAYS before
(``domain.retention``), then takes waiting users out of the lobby after
LOBBY_TIMEOUT_HOURS, then nudges users
inactive for REMINDER_AFTER_HOURS, once per idle period, in their language, with the button
that acts on their state. Users are claimed atomically in small batches just before they
are sent to, so overlapping runs never remind anyone twice and a run that stops at its
deadline leaves the rest to the next. Sends are paced at 14 per second, so that even two
overlapping runs stay under Telegram's 30 messages per second; a 429 is waited out when the
deadline allows, otherwise the claim is given back and the run stops.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from messagine import keyboards
from messagine.analytics import Analytics, NoAnalytics
from messagine.catalog import Catalog
from messagine.domain.retention import DAY, Cutoffs, cutoffs
from messagine.languages import language_name
from messagine.models import EndReason, Nudge, Periods, ReminderRules, Retention
from messagine.storage.port import Chats, Jobs, Lobby, PersonalRecords, Retained, Users
from messagine.telegram import (
    Keyboard,
    Telegram,
    TelegramBlocked,
    TelegramError,
    TelegramUnavailable,
    reset_deadline,
    set_deadline,
)

log = logging.getLogger("messagine.reminders")

BATCH = 20
# Telegram allows about 30 messages per second for the whole bot: a run sends at most 14,
# so even two overlapping runs stay under it, and live chats keep some room.
MESSAGES_PER_SECOND = 14.0
PURGE_BATCH = 200
"""Records of each kind one ``purge_expired`` call deletes at most: a call stays short
(on Firestore, a message is two documents, so one call is at most 800 deletes)."""
PURGE_SHARE = 0.25
"""The share of a run's budget the purge may take: the sends keep the rest."""


class JobStore(Jobs, Retained, Chats, PersonalRecords, Lobby, Users, Protocol):
    """The storage roles the scheduled job uses."""


@dataclass
class RunSummary:
    """What a run did; the job answers it as JSON and logs it on one line."""

    sent: int = 0
    lobby_timeouts: int = 0
    language_offers: int = 0
    failed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    purged: dict[str, int] = field(default_factory=dict)
    idle_chats_ended: int = 0
    inactivity_notices: int = 0
    accounts_erased: int = 0
    erasures_finished: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict."""
        return {"sent": self.sent, "lobby_timeouts": self.lobby_timeouts,
                "language_offers": self.language_offers,
                "failed": self.failed, "skipped": self.skipped,
                "stopped_early": self.stopped_early, "purged": self.purged,
                "idle_chats_ended": self.idle_chats_ended,
                "inactivity_notices": self.inactivity_notices,
                "accounts_erased": self.accounts_erased,
                "erasures_finished": self.erasures_finished}


class Pacer:
    """Spaces sends at most ``rate`` per second (sleeping, since the run owns the request)."""

    def __init__(self, rate: float, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._interval = 1.0 / rate
        self._monotonic = monotonic
        self._sleep = sleep
        self._next = 0.0

    def wait(self) -> None:
        """Block until the next send is allowed."""
        now = self._monotonic()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self._interval


class Reminders:
    """One run of the reminders job."""

    def __init__(self, repository: JobStore, telegram: Telegram, catalog: Catalog,
                 rules: ReminderRules, clock: Callable[[], float],
                 retention: Retention | None = None, periods: Periods | None = None,
                 analytics: Analytics | None = None) -> None:
        self.periods = periods
        self.analytics = analytics or NoAnalytics()
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.rules = rules
        self.clock = clock
        self.retention = retention

    def purge(self, budget_s: float) -> dict[str, int]:
        """Delete records past their retention; the counts per kind ({} without one).

        PURGE_BATCH of each kind per call, until none is left or ``budget_s`` has
        passed; what a spent budget leaves, the next run deletes.
        """
        totals: dict[str, int] = {}
        if self.retention is None:
            return totals
        deadline = time.monotonic() + budget_s
        while True:
            counts = self.repository.purge_expired(self.clock(), self.retention, PURGE_BATCH)
            for kind, count in counts.items():
                totals[kind] = totals.get(kind, 0) + count
            if max(counts.values(), default=0) < PURGE_BATCH or time.monotonic() >= deadline:
                return totals

    def run(self) -> RunSummary:
        """Purge, time out the lobby, then nudge, until done or the run's budget is spent."""
        deadline = time.monotonic() + self.rules.run_budget_s
        summary = RunSummary()
        summary.purged = self.purge(self.rules.run_budget_s * PURGE_SHARE)
        token = set_deadline(deadline)
        pacer = Pacer(MESSAGES_PER_SECOND)
        try:
            self._finish_erasures(summary, deadline)
            self._retention(summary, pacer, deadline)
            self._lobby_timeouts(summary, pacer, deadline)
            self._language_offers(summary, pacer, deadline)
            idle_before = self.clock() - self.rules.remind_after_s
            summary.skipped = self.repository.count_idle_excluded(idle_before)
            while not summary.stopped_early:
                if time.monotonic() > deadline - 1.0:
                    summary.stopped_early = True
                    break
                batch = self.repository.claim_nudges(idle_before, self.clock(), BATCH)
                if not batch:
                    break
                for position, nudge in enumerate(batch):
                    if summary.stopped_early or time.monotonic() > deadline - 1.0:
                        for unsent in batch[position:]:
                            self.repository.release_nudge(unsent.user_id)
                        summary.stopped_early = True
                        break
                    pacer.wait()
                    self._nudge(nudge, summary)
        finally:
            reset_deadline(token)
        log.info("reminders run: %s", summary.as_dict(), extra={"json_fields": {
            "reminders": summary.as_dict()}})
        return summary

    def _retention(self, summary: RunSummary, pacer: Pacer, deadline: float) -> None:
        """Idle chats, inactivity notices and erasures (``domain.retention``), batch by batch."""
        if self.periods is None:
            return
        cut = cutoffs(self.clock(), self.periods)
        self._idle_chats(cut, summary, pacer, deadline)
        self._inactivity_notices(cut, self.periods, summary, pacer, deadline)
        self._erasures(cut, summary, pacer, deadline)

    def _idle_chats(self, cut: Cutoffs, summary: RunSummary, pacer: Pacer,
                    deadline: float) -> None:
        """End the chats nobody wrote in; both users told, each in their language."""
        ended_any = True
        while ended_any and time.monotonic() < deadline - 1.0 and (
                idle := self.repository.idle_chats(cut, BATCH)):
            ended_any = False  # a batch that ends nothing would come back the same
            for user_id, language in idle:
                # No update opened this: a closing id of the job's own, negative, random.
                ended = self.repository.end_chat(user_id, EndReason.IDLE, self.clock(),
                                                 -secrets.randbits(62) - 1)
                if ended is None:
                    continue  # ended meanwhile by one of them
                ended_any = True
                summary.idle_chats_ended += 1
                for who, their_language in ((user_id, language),
                                            (ended.partner_id, ended.partner_language)):
                    t = self.catalog.for_language(their_language)
                    pacer.wait()
                    self._send(who, t("chat.idle_ended"), keyboards.idle(t), summary)

    def _inactivity_notices(self, cut: Cutoffs, periods: Periods, summary: RunSummary,
                            pacer: Pacer, deadline: float) -> None:
        """The one notice before an inactive account's erasure, naming its date."""
        erase_on = datetime.fromtimestamp(self.clock() + periods.notice_days * DAY, UTC)
        unsent: list[int] = []  # claimed, and not (yet) told
        try:
            while time.monotonic() < deadline - 1.0 and (
                    noticed := self.repository.claim_inactivity_notices(cut, self.clock(),
                                                                        BATCH)):
                unsent.extend(user_id for user_id, _ in noticed)
                for user_id, language in noticed:
                    t = self.catalog.for_language(language)
                    pacer.wait()
                    try:
                        self.telegram.send_text(user_id, t(
                            "account.inactive_notice", date=erase_on.date().isoformat()),
                            keyboards.idle(t))
                    except TelegramBlocked:
                        self.repository.set_blocked(user_id, blocked=True)
                        unsent.remove(user_id)
                        summary.failed += 1
                    except TelegramError:
                        summary.failed += 1
                    else:
                        unsent.remove(user_id)
                        summary.inactivity_notices += 1
        finally:
            # Given back after the loop (it would claim them again at once), and also when
            # the run stops on an error half way through a batch: no erasure without the
            # notice; the next run tries again. A 403 is final: the user blocked the bot
            # and no notice can reach them.
            for user_id in unsent:
                self.repository.release_inactivity_notice(user_id)

    def _erasures(self, cut: Cutoffs, summary: RunSummary, pacer: Pacer,
                  deadline: float) -> None:
        """Erase the accounts noticed long enough ago, as /deleteme does; never tracked.

        A chat the partner still writes in is never idle: it ends first, and the partner
        learns only that it ended (else their chat would vanish without a word, and the
        anonymised chat, never ended, would outlive every retention period).
        """
        erased: set[int] = set()
        while time.monotonic() < deadline - 1.0:
            due = set(self.repository.inactive_accounts(cut, BATCH)) - erased
            if not due:  # none left, or only ones this run erased already
                return
            for user_id in due:
                erased.add(user_id)
                ended = self.repository.end_chat(user_id, EndReason.DELETED, self.clock(),
                                                 -secrets.randbits(62) - 1)
                if ended is not None:
                    t = self.catalog.for_language(ended.partner_language)
                    pacer.wait()
                    self._send(ended.partner_id, t("exit.closed_by_partner"),
                               keyboards.idle(t), summary)
                self.analytics.delete_profile(user_id)
                self.repository.delete_user(user_id)
                summary.accounts_erased += 1
            self.analytics.flush()  # no update's pipeline flushes for the job

    def _finish_erasures(self, summary: RunSummary, deadline: float) -> None:
        """Finish the erasures that an outage or a crash stopped half way.

        /deleteme's, an age refusal's or this job's; a user who came back since keeps
        their account, and loses what the erasure was to erase (``finish_erasure``).
        """
        finished: set[int] = set()
        while time.monotonic() < deadline - 1.0 and (unfinished := set(
                self.repository.unfinished_erasures(BATCH)) - finished):
            for user_id in unfinished:
                finished.add(user_id)
                self.analytics.delete_profile(user_id)  # buffered: lost if it stopped first
                self.repository.finish_erasure(user_id)
                summary.erasures_finished += 1
            self.analytics.flush()

    def _lobby_timeouts(self, summary: RunSummary, pacer: Pacer, deadline: float) -> None:
        waiting_before = self.clock() - self.rules.lobby_timeout_s
        while time.monotonic() < deadline - 1.0:
            expired = self.repository.expire_lobby(waiting_before, BATCH)
            if not expired:
                return
            for user_id, language in expired:
                t = self.catalog.for_language(language)
                pacer.wait()
                if self._send(user_id, t("lobby.timeout"), keyboards.idle(t), summary):
                    summary.lobby_timeouts += 1

    def _language_offers(self, summary: RunSummary, pacer: Pacer, deadline: float) -> None:
        """Offer the any-language pool to users who waited long in their language's."""
        waiting_before = self.clock() - self.rules.any_language_after_s
        while time.monotonic() < deadline - 1.0:
            offers = self.repository.claim_language_offers(waiting_before, BATCH)
            if not offers:
                return
            for user_id, language in offers:
                t = self.catalog.for_language(language)
                pacer.wait()
                if self._send(user_id, t("lobby.any_offer", language=language_name(language)),
                              keyboards.any_language_offer(t), summary):
                    summary.language_offers += 1

    def _nudge(self, nudge: Nudge, summary: RunSummary) -> None:
        t = self.catalog.for_language(nudge.language)
        text, keyboard = {
            "idle": (t("reminder.idle"), keyboards.idle(t)),
            "waiting": (t("reminder.waiting"), keyboards.lobby(t)),
            "chatting": (t("reminder.chatting"), keyboards.in_chat(t)),
        }[nudge.state]
        try:
            self.telegram.send_text(nudge.user_id, text, keyboard)
        except TelegramUnavailable:
            self.repository.release_nudge(nudge.user_id)  # the next run tries again
            summary.failed += 1
            summary.stopped_early = True
            return
        except TelegramBlocked:
            self.repository.set_blocked(nudge.user_id, blocked=True)
            summary.failed += 1
            return
        except TelegramError:
            summary.failed += 1
            return
        summary.sent += 1

    def _send(self, user_id: int, text: str, keyboard: Keyboard, summary: RunSummary) -> bool:
        try:
            self.telegram.send_text(user_id, text, keyboard)
        except TelegramBlocked:
            self.repository.set_blocked(user_id, blocked=True)
            summary.failed += 1
            return False
        except TelegramError:
            summary.failed += 1
            return False
        return True
