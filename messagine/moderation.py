"""Moderation: reports, blocks, bans and the admins' commands.

Admins are the Telegram ids in ADMIN_IDS (configuration, never a database flag), and the
moderators' chat is ADMIN_CHAT_ID. A report ends the chat, excludes the pair for good and
sends the moderators the reported user's id, the reason and, as evidence, copies of the
reported user's last messages in that chat (copied from Telegram: we keep no content).
The reported user is never told who reported them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Protocol

from messagine import keyboards, routes
from messagine.analytics import Analytics
from messagine.answer import Answer
from messagine.catalog import Catalog
from messagine.conversation import Conversation
from messagine.domain.erasure import is_tombstone
from messagine.domain.ratings import RatingRule, may_rate
from messagine.models import ChatRecord, EndReason, Report, UserState
from messagine.payload import INT64
from messagine.storage.port import Chats, MessageLog, ModerationRecords, PersonalRecords, Users
from messagine.telegram import Telegram, TelegramBlocked, TelegramError, TelegramRejected

log = logging.getLogger(__name__)

EVIDENCE_MESSAGES = 5
"""How many of the reported user's last messages of the chat the moderators see (copies);
the report prompt and the privacy policy say so."""
ADMIN_COMMANDS = ("ban", "unban", "detail", "stats")


class ModerationStore(ModerationRecords, PersonalRecords, Users, Chats, MessageLog, Protocol):
    """The storage roles moderation uses."""


@dataclass(frozen=True, slots=True)
class ModerationSettings:
    """Who moderates, where, and how long after a chat it can still be reported."""

    admin_ids: frozenset[int]
    admin_chat_id: int | None
    report_window_s: float
    rating_flag_after: int = RatingRule().flag_after
    """How many 👎 from different people bring a user to the moderators' attention."""

    @property
    def rating_rule(self) -> RatingRule:
        """A chat can be rated as long as it can be reported."""
        return RatingRule(window_s=self.report_window_s, flag_after=self.rating_flag_after)


class Moderation:
    """Reports, blocks, bans and admin commands."""

    def __init__(
        self, repository: ModerationStore, telegram: Telegram, catalog: Catalog,
        conversation: Conversation, analytics: Analytics, settings: ModerationSettings,
        clock: Callable[[], float],
    ) -> None:
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.conversation = conversation
        self.analytics = analytics
        self.settings = settings
        self.clock = clock
        self.moderator_texts = catalog.for_language("en")

    def is_admin(self, user_id: int) -> bool:
        """True for the ids in ADMIN_IDS."""
        return user_id in self.settings.admin_ids

    def _target(self, user: UserState) -> ChatRecord | None:
        """The chat a report or block is about: the current one, or the last one if recent."""
        last = self.repository.last_chat(user.user_id)
        if last is None:
            return None
        if last.ended_at is not None and self.clock() - last.ended_at > \
                self.settings.report_window_s:
            return None
        return last

    def _card_target(self, user: UserState, chat: str) -> ChatRecord | None:
        """The ended chat an end-of-chat card names, while it can be rated and reported."""
        chat_id = int(chat) if re.fullmatch(r"-?\d{1,19}", chat) else None
        if chat_id is None or not -INT64 <= chat_id < INT64:
            return None
        record = self.repository.chat_of(user.user_id, chat_id)
        if record is None or not may_rate(record.ended_at, self.clock(),
                                          self.settings.rating_rule):
            return None
        return record

    # -- users ---------------------------------------------------------------------------

    def ask_report(self, user: UserState, answer: Answer, chat: str = "") -> str:
        """Offer the reasons, if there is someone to report.

        ``chat``: the chat id an end-of-chat card names; its Report works for that chat,
        whatever came after, while the report window lasts.
        """
        t = self.catalog.for_user(user)
        target = self._card_target(user, chat) if chat else self._target(user)
        if target is None and chat:
            answer.send(t("card.too_late"), keyboards.after_card(t))
            return "report:too_late"
        if target is None:
            answer.send(t("report.nobody"))
            return "report:nobody"
        answer.send(t("report.ask", count=EVIDENCE_MESSAGES),
                    keyboards.report_reasons(t, chat))
        return "report:asked"

    def cancel_report(self, user: UserState, answer: Answer) -> str:
        """The reporter changed their mind: nothing is stored or sent."""
        answer.send(self.catalog.for_user(user)("report.cancelled"))
        return "report:cancelled"

    def report(self, user: UserState, argument: str, answer: Answer, update_id: int) -> str:
        """End the chat, exclude the pair, store the report and send it to the moderators.

        ``argument``: the reason, and the chat id when the report came from a card.
        """
        t = self.catalog.for_user(user)
        reason, _, chat = argument.partition(":")
        target = self._card_target(user, chat) if chat else self._target(user)
        if target is None and chat:
            answer.send(t("card.too_late"), keyboards.after_card(t))
            return "report:too_late"
        if target is None or reason not in keyboards.REPORT_REASONS:
            answer.send(t("report.nobody"))
            return "report:nobody"
        if target.ended_at is None or (target.closed_by_update == update_id and user.chat is None):
            # (The second: this report's attempt that died had ended it; its partner is
            # told again, as any resumed ending tells them.)
            self.conversation.end(user, EndReason.REPORT, update_id)
        now = self.clock()
        # A partner who erased their data is a tombstone: their key keeps both binding.
        self.repository.exclude_pair(user.user_id, target.partner_id, "report", now,
                                     target.partner_key)
        report = self.repository.add_report(user.user_id, target.partner_id, target.chat_id,
                                            reason, now, target.partner_key)
        if report is None:  # pressed again, or re-delivered: the moderators have it
            answer.send(t("report.already_sent"), keyboards.for_state(t, _after(user, target)))
            return "report:already_sent"
        # The moderators first: a re-delivery after a failed answer finds the report made.
        self._send_to_moderators(report.report_id, target, reason)
        answer.send(t("report.thanks"), keyboards.for_state(t, _after(user, target)))
        return "report:sent"

    def rate(self, user: UserState, argument: str, answer: Answer) -> str:
        """Count a 👍 or 👎 for the partner of the chat a card names, while it can be rated.

        ``argument`` is "up:<chat id>" or "down:<chat id>". A 👎 keeps the pair apart; the
        exclusion is made first, so a re-delivery after a failure in between completes it.
        """
        t = self.catalog.for_user(user)
        value, _, chat = argument.partition(":")
        target, now, rule = self._card_target(user, chat), self.clock(), self.settings.rating_rule
        if value not in ("up", "down") or target is None:
            answer.send(t("card.too_late"), keyboards.after_card(t))
            return "rate:too_late"
        positive = value == "up"
        if not positive:  # a partner who erased their data: their key keeps it binding
            self.repository.exclude_pair(user.user_id, target.partner_id, "rating", now,
                                         target.partner_key)
        ended = t("exit.closed_by_you" if target.ended_by_user else "exit.closed_by_partner")

        def rated(key: str, outcome: str) -> str:  # the card, answered in place
            answer.send(ended + "\n\n" + t(key), keyboards.after_rating(t, target.chat_id))
            return outcome

        if target.partner_key is not None:  # erased: no record left to count it on
            return rated(f"card.rated_gone_{value}", "rate:partner_gone")
        verdict = self.repository.rate_user(target.partner_id, target.chat_id, positive, now,
                                            rule)
        if not verdict.counted:
            return rated("card.rated_before", "rate:before")
        if verdict.flag:
            self._flag(target.partner_id, rule.flag_after)
        return rated("card.rated_up" if positive else "card.rated_down",
                     "rate:up" if positive else "rate:down")

    def _flag(self, user_id: int, count: int) -> None:
        """Tell the moderators (once: the rule says when) about a user many rated 👎."""
        if self.settings.admin_chat_id is None:
            log.warning("a user was rated down by many, but ADMIN_CHAT_ID is not set")
            return
        try:
            self.telegram.send_text(self.settings.admin_chat_id, self.moderator_texts(
                "mod.flag", user_id=user_id, count=count))
        except TelegramError as error:
            log.error("a flag did not reach the moderators: %s %s",  # noqa: TRY400
                      error.method, error.code)

    def _send_to_moderators(self, report_id: int, target: ChatRecord, reason: str) -> None:
        chat_id = self.settings.admin_chat_id
        if chat_id is None:
            log.warning("report %s stored, but ADMIN_CHAT_ID is not set", report_id)
            return
        t = self.moderator_texts
        evidence = self.repository.recent_messages(target.chat_id, target.partner_id,
                                                   EVIDENCE_MESSAGES)
        when = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d %H:%M UTC")
        try:
            self.telegram.send_text(chat_id, t(
                "mod.report", report_id=report_id, reported_id=target.partner_id,
                reason=reason, when=when, count=len(evidence)),
                keyboards.moderation(t, report_id))
            shown = 0
            for message_id in evidence:
                try:
                    self.telegram.copy_message(chat_id, target.partner_id, message_id)
                    shown += 1
                except (TelegramRejected, TelegramBlocked):
                    continue  # deleted since, or the reported user blocked the bot
            if evidence and not shown:
                self.telegram.send_text(chat_id, t("mod.no_evidence", report_id=report_id))
        except TelegramError as error:
            # The report is stored; the reporter must not see a failure for this.
            log.error("report %s not delivered to the moderators: %s %s", report_id,  # noqa: TRY400
                      error.method, error.code)

    def block(self, user: UserState, answer: Answer, update_id: int) -> str:
        """Never match the user with their current or last partner again."""
        t = self.catalog.for_user(user)
        target = self._target(user)
        if target is None:
            answer.send(t("block.nobody"))
            return "block:nobody"
        if target.ended_at is None:
            self.conversation.end(user, EndReason.BLOCK, update_id)
        self.repository.exclude_pair(user.user_id, target.partner_id, "block", self.clock(),
                                     target.partner_key)
        answer.send(t("block.done"), keyboards.for_state(t, _after(user, target)))
        return "block:done"

    # -- admins --------------------------------------------------------------------------

    def admin_command(self, admin: UserState, command: str, argument: str, answer: Answer,
                      update_id: int) -> str:
        """Run /ban, /unban, /detail or /stats for an admin."""
        t = self.moderator_texts
        self.analytics.track(admin, f"admin.{command}")
        if command == "stats":
            day_start = self.clock() - self.clock() % 86_400
            stats = self.repository.moderation_stats(day_start)
            answer.send(t("admin.stats", users=stats.users, waiting=stats.waiting,
                          active_chats=stats.active_chats, chats_today=stats.chats_today,
                          reports_today=stats.reports_today))
            return "admin:stats"
        match = re.fullmatch(r"\s*(\d{1,19})(?:\s+(.*))?", argument, re.DOTALL)
        user_id = int(match.group(1)) if match is not None else 0
        if match is None or not 0 < user_id < INT64:  # no account has another id
            answer.send(t("admin.usage"))
            return "admin:usage"
        rest = (match.group(2) or "").strip()
        if command == "detail":
            return self._detail(user_id, answer)
        if command == "ban":
            return self.ban(user_id, rest, answer, update_id)
        return self.unban(user_id, answer)

    def ban(self, user_id: int, reason: str, answer: Answer, update_id: int) -> str:
        """Ban: end their chat and lobby place, and tell them why."""
        t = self.moderator_texts
        target = self.repository.get_user(user_id)
        if target is None:
            answer.send(t("admin.unknown_user", user_id=user_id))
            return "admin:ban:unknown"
        if target.chat is not None:
            self.conversation.end(target, EndReason.BANNED, update_id)
        self.repository.set_banned(user_id, banned=True)
        user_t = self.catalog.for_user(target)
        self._tell(user_id, user_t("banned.told", reason=reason or user_t("banned.no_reason")))
        answer.send(t("admin.banned", user_id=user_id))
        return "admin:ban"

    def unban(self, user_id: int, answer: Answer) -> str:
        """Lift a ban and tell them."""
        t = self.moderator_texts
        target = self.repository.get_user(user_id)
        if target is None or not self.repository.set_banned(user_id, banned=False):
            answer.send(t("admin.unknown_user", user_id=user_id))
            return "admin:unban:unknown"
        self._tell(user_id, self.catalog.for_user(target)("unbanned.told"))
        answer.send(t("admin.unbanned", user_id=user_id))
        return "admin:unban"

    def _detail(self, user_id: int, answer: Answer) -> str:
        t = self.moderator_texts
        records = self.repository.export_user(user_id)
        state = self.repository.get_user(user_id)
        if records is None or state is None:
            answer.send(t("admin.unknown_user", user_id=user_id))
            return "admin:detail:unknown"
        activity = "chatting" if state.chat else "waiting" if state.waiting else "idle"
        last_seen = datetime.fromtimestamp(records.profile.last_seen, UTC)
        answer.send(t("admin.detail", user_id=user_id, language=state.language,
                      state=activity, banned="yes" if state.banned else "no",
                      blocked="yes" if state.blocked else "no",
                      last_seen=last_seen.strftime("%Y-%m-%d %H:%M UTC"),
                      chats=len(records.chats), messages=len(records.messages)))
        return "admin:detail"

    def resolve(self, admin_id: int, data: str, chat_id: int, message_id: int,
                update_id: int) -> str:
        """A moderator pressed Ban or Dismiss under a report."""
        t = self.moderator_texts
        ban = data.startswith(routes.MOD_BAN)
        number = data.rsplit(":", 1)[1]
        answer = Answer(self.telegram, chat_id, message_id)
        if not (number.isascii() and number.isdigit() and 0 < int(number) < INT64):
            log.warning("a moderation button carried no report number")
            return "mod:malformed"
        report_id = int(number)
        # A Ban moves the report open -> banning (won once; a re-delivery of the press, or
        # a later Ban on one that stopped half way, resumes it), carries the ban out (every
        # step idempotent), then banning -> banned. A Dismiss needs it open, so the two
        # never both win, and an old Ban button after an unban changes nothing.
        report = (self.repository.resolve_report(report_id, "banning", ("open", "banning"))
                  if ban else self.repository.resolve_report(report_id, "dismissed"))
        if report is None:  # another moderator's, or an old button's
            answer.send(t("mod.already_handled", report_id=report_id))
            return "mod:already_handled"
        if not ban:
            answer.send(t("mod.resolved_dismiss", report_id=report_id, admin_id=admin_id))
            return "mod:dismiss"
        if is_tombstone(report.reported_id):  # they erased their data since
            return self._ban_erased(report, admin_id, answer)
        self.ban(report.reported_id, report.reason, Answer(self.telegram, chat_id), update_id)
        self.repository.resolve_report(report_id, "banned", ("banning",))
        answer.send(t("mod.resolved_ban", report_id=report_id, reported_id=report.reported_id,
                      admin_id=admin_id))
        return "mod:ban"

    def _ban_erased(self, report: Report, admin_id: int, answer: Answer) -> str:
        """Ban a reported user who has erased their data: by their key, if it was kept."""
        t = self.moderator_texts
        back = self.repository.ban_erased(report.report_id)
        self.repository.resolve_report(report.report_id, "banned", ("banning",))
        if back is None:  # a report kept no key to them: nothing can follow them
            answer.send(t("mod.resolved_ban_unkeyed", report_id=report.report_id,
                          admin_id=admin_id))
            return "mod:ban_unkeyed"
        for user_id in back:  # back already
            target = self.repository.get_user(user_id)
            user_t = self.catalog.for_user(target) if target else self.moderator_texts
            self._tell(user_id, user_t("banned.told", reason=report.reason))
        answer.send(t("mod.resolved_ban_erased", report_id=report.report_id,
                      admin_id=admin_id))
        return "mod:ban_erased"

    def _tell(self, user_id: int, text: str) -> None:
        try:
            self.telegram.send_text(user_id, text)
        except (TelegramBlocked, TelegramRejected):
            log.info("could not tell user about a moderation decision (blocked or gone)")


def _after(user: UserState, target: ChatRecord) -> UserState:
    """The user once a report or block of ``target`` is done.

    Out of that chat if it was going on (a report or block ends it), else as they were:
    searching, or in a later chat.
    """
    return user if target.ended_at is not None else replace(user, chat=None)
