"""The privacy service: the policy's rights as commands.

/privacy (the policy), /mydata (access and portability: a JSON file), /deleteme (erasure,
after confirmation), /analytics off|on (objection to analytics), and the age question
before a first chat. Rectification needs no command: the profile refreshes from every
update and /set_language changes the language.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from messagine import keyboards
from messagine.analytics import Analytics
from messagine.answer import Answer
from messagine.catalog import Catalog, Texts
from messagine.conversation import Conversation
from messagine.domain.ratings import RatingRule
from messagine.models import EndReason, Periods, StoredProfile, UserRecords, UserState
from messagine.moderation import EVIDENCE_MESSAGES
from messagine.storage.port import PersonalRecords, Users
from messagine.storage.registry import backend
from messagine.telegram import Telegram

TELEGRAM_TEXT_LIMIT = 4096
EXPORT_FORMAT = "messagine-user-data/1"


class PrivacyStore(PersonalRecords, Users, Protocol):
    """The storage roles privacy rights use: a user's records and choices."""


@dataclass(frozen=True, slots=True)
class PrivacyTerms:
    """The configured facts the policy states."""

    contact: str
    policy_url: str | None
    message_days: int
    chat_days: int
    min_age: int
    storage: str = "mongo"
    """The backend (settings.storage): the policy names who stores the records."""
    periods: Periods = field(default_factory=Periods)
    """The periods of the scheduled job's retention (reports, exclusions, accounts...)."""
    rating_flag_after: int = RatingRule().flag_after
    """How many 👎 from different people bring a user to the moderators (the policy says)."""


def policy_text(texts: Texts, terms: PrivacyTerms) -> str:
    """The full policy in one language (docs/privacy.md is the English one, on MongoDB).

    What erasure keeps follows the rights, before the sections on children and contact;
    the periods the scheduled job keeps and the age refusal come last, before the closing
    contact paragraph.
    """
    periods = terms.periods
    sections = texts("privacy.policy", contact=terms.contact, message_days=terms.message_days,
                     chat_days=terms.chat_days, min_age=terms.min_age,
                     store=backend(terms.storage).store_name, evidence=EVIDENCE_MESSAGES,
                     inactive_days=periods.inactive_days).split("\n\n")
    sections[-2:-2] = [texts("privacy.erasure_keeps")]
    sections[-1:-1] = [
        texts("privacy.age_marker", min_age=terms.min_age, age_days=periods.age_refusal_days,
              contact=terms.contact),
        texts("privacy.periods", idle_hours=periods.idle_chat_hours,
              report_days=periods.report_days, exclusion_days=periods.exclusion_days,
              inactive_days=periods.inactive_days, notice_days=periods.notice_days),
        texts("privacy.ratings", flag_after=terms.rating_flag_after),
        texts("privacy.newest")]
    return "\n\n".join(sections)


def split_message(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Split at paragraph, then line, boundaries into parts Telegram accepts."""
    parts: list[str] = []
    current = ""
    for whole_line in text.split("\n"):
        line = whole_line
        while len(line) > limit:  # a single line longer than a message: cut it hard
            if current:
                parts.append(current)
                current = ""
            parts.append(line[:limit])
            line = line[limit:]
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > limit:
            parts.append(current)
            current = line
        else:
            current = candidate
    if current:
        parts.append(current)
    return parts


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def _own_record(profile: StoredProfile | None, label: Callable[[int], str]) -> dict[str, Any]:
    """The profile, settings and lobby parts of /mydata (empty for an unknown user)."""
    if profile is None:
        return {"profile": dict.fromkeys(("telegram_id", "first_name", "last_name", "username",
                                          "language_code", "first_seen", "last_seen")),
                "settings": {"language": None, "analytics": "on", "reminders": "on",
                             "age_confirmation": None, "age_confirmation_at": None,
                             "inactivity_notice_due": False, "inactivity_notice_at": None,
                             "blocked_the_bot": False, "banned": False,
                             "reminder_due": False, "last_reminder_at": None},
                "lobby": None, "ratings": {"thumbs_up": 0, "thumbs_down": 0,
                                           "moderators_told": False, "counted_at": []},
                "newest_bot_message_id": None}
    return {
        "profile": {
            "telegram_id": profile.user_id, "first_name": profile.first_name,
            "last_name": profile.last_name, "username": profile.username,
            "language_code": profile.language_code, "first_seen": _iso(profile.first_seen),
            "last_seen": _iso(profile.last_seen),
        },
        "settings": {
            "language": profile.language,
            "analytics": "off" if profile.analytics_opt_out else "on",
            "reminders": "on" if profile.reminders_enabled else "off",
            "age_confirmation": profile.age_answer,
            "age_confirmation_at": _iso(profile.age_answered_at),
            "inactivity_notice_due": profile.notice_pending,
            "inactivity_notice_at": _iso(profile.noticed_at),
            "blocked_the_bot": profile.blocked,
            "banned": profile.banned,
            "reminder_due": profile.nudge_pending,
            "last_reminder_at": _iso(profile.reminded_at),
        },
        "lobby": None if profile.lobby is None else {
            "language": profile.lobby.language, "since": _iso(profile.lobby.since),
            "offered_any_language": profile.lobby.offered,
            "not_to_meet": [label(other) for other in profile.lobby.avoid]},
        # Which chat a rating came from is not shown: with the counts it would name who.
        "ratings": {"thumbs_up": profile.ratings_up, "thumbs_down": profile.ratings_down,
                    "moderators_told": profile.ratings_flagged,
                    "counted_at": [_iso(at) for at in profile.ratings_counted_at]},
        "newest_bot_message_id": profile.newest_message or None,
    }


_FLOOD_TIMES = ("at",)


def _processing(records: UserRecords) -> dict[str, Any]:
    """What the bot keeps to process the user's updates: flood counters and update ids."""
    return {
        "flood_counters": {name: _iso(value) if name in _FLOOD_TIMES and value else value
                           for name, value in records.flood.items()},
        "recent_update_ids": records.recent_updates,
        "updates_in_progress": [
            {"update_id": update_id, "attempt": claim.get("owner"),
             "lease_until": _iso(claim.get("lease_until")), "attempts": claim.get("attempts")}
            for update_id, claim in records.claims.items()],
    }


def export_document(records: UserRecords | None, generated_at: float) -> dict[str, Any]:
    """The /mydata document: everything stored under the user, partners only as labels.

    Another person never appears but as a label (partner-1...); who reported or blocked
    the user is not even labelled. ``records`` is None for a user erased meanwhile: the
    document then holds nothing.
    """
    labels: dict[int, str] = {}

    def label(user_id: int) -> str:
        return labels.setdefault(user_id, f"partner-{len(labels) + 1}")

    chat_labels: dict[int, str] = {}

    def chat_label(chat_id: int) -> str:
        return chat_labels.get(chat_id, "chat-deleted")

    chats = []
    for chat in records.chats if records else []:
        chat_labels[chat.chat_id] = f"chat-{len(chat_labels) + 1}"
        chats.append({
            "chat": chat_labels[chat.chat_id], "partner": label(chat.partner_id),
            "language": chat.language, "started_at": _iso(chat.started_at),
            "ended_at": _iso(chat.ended_at), "how_it_ended": chat.end_reason,
            "ended_by": None if chat.ended_by_user is None else (
                "you" if chat.ended_by_user else "partner"),
            "opened_by_update": chat.opened_by_update,
            "closed_by_update": chat.closed_by_update,
        })
    held = records or UserRecords(StoredProfile(0, "", None, None, None, "", 0.0, 0.0))
    return {
        "format": EXPORT_FORMAT,
        "generated_at": _iso(generated_at),
        **_own_record(records.profile if records else None, label),
        "chats": chats,
        "messages_sent": [
            {"chat": chat_label(m.chat_id), "message_id": m.sender_message_id,
             "copy_message_id": m.copy_message_id, "content_type": m.content_type,
             "sent_at": _iso(m.sent_at)} for m in held.messages],
        "messages_received": [
            {"chat": chat_label(m.chat_id), "message_id": m.copy_message_id,
             "original_message_id": m.sender_message_id, "content_type": m.content_type,
             "received_at": _iso(m.sent_at)} for m in held.received],
        "blocked_users": [
            {"user": label(other), "reason": reason, "at": _iso(at)}
            for other, reason, at in held.exclusions],
        "excluded_by_others": [
            {"reason": reason, "at": _iso(at)} for _, reason, at in held.excluded_by],
        "reports": [
            {"report_id": r.report_id, "chat": chat_label(r.chat_id),
             "about": label(r.reported_id), "reason": r.reason, "at": _iso(r.created_at),
             "status": r.status} for r in held.reports],
        # Neither who nor in which chat: that would point at the reporter.
        "reports_about_you": [
            {"report_id": r.report_id, "reason": r.reason, "at": _iso(r.created_at),
             "status": r.status} for r in held.reports_about],
        # An album on its way is kept a day after its last item (``domain.albums``).
        "albums_sent": [
            {"chat": chat_label(a.chat_id), "changes": a.version, "batches": [
                {"batch": b.number, "state": b.state.value,
                 "last_item_at": _iso(b.last_item_at), "opened_by_update": b.update_id,
                 "flush_owner": b.owner, "flush_lease_until": _iso(b.lease_until)
                 if b.lease_until else b.lease_until,
                 "items": [{"message_id": i.message_id, "content_type": i.content_type}
                           for i in b.items]} for b in a.batches]}
            for a in held.albums],
        **_processing(held),
    }


class Privacy:
    """Each right of the privacy policy as a command."""

    def __init__(
        self, repository: PrivacyStore, telegram: Telegram, catalog: Catalog,
        conversation: Conversation, analytics: Analytics, terms: PrivacyTerms,
        clock: Callable[[], float],
    ) -> None:
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.conversation = conversation
        self.analytics = analytics
        self.terms = terms
        self.clock = clock

    def policy(self, user: UserState, answer: Answer) -> str:
        """Send the policy (split at Telegram's limit), or its link when one is configured."""
        t = self.catalog.for_user(user)
        if self.terms.policy_url:
            answer.send(t("privacy.link", url=self.terms.policy_url))
            return "privacy:link"
        parts = split_message(policy_text(t, self.terms))
        for part in parts:
            answer.send(part)
        return f"privacy:text:{len(parts)}"

    def my_data(self, user: UserState) -> str:
        """Send everything stored about the user as a JSON document."""
        records = self.repository.export_user(user.user_id)
        t = self.catalog.for_user(user)
        document = export_document(records, self.clock())
        content = json.dumps(document, ensure_ascii=False, indent=2).encode()
        self.telegram.send_document(user.user_id, "messagine-my-data.json", content,
                                    t("mydata.caption"))
        return "mydata:sent"

    def ask_delete(self, user: UserState, answer: Answer) -> str:
        """Ask before erasing everything."""
        t = self.catalog.for_user(user)
        answer.send(t("deleteme.confirm"), keyboards.confirm_delete(t))
        return "deleteme:asked"

    def keep(self, user: UserState, answer: Answer) -> str:
        """The user cancelled the erasure."""
        answer.send(self.catalog.for_user(user)("deleteme.kept"))
        return "deleteme:cancelled"

    def delete(self, user: UserState, answer: Answer, update_id: int) -> str:
        """End the chat (the partner learns only that it ended), then erase everything.

        An age refusal's marker survives, with its time: erasure must not reopen the gate.
        """
        t = self.catalog.for_user(user)
        # Without a chat, this resumes only an ending this update made before (its
        # attempt died): the partner is told again.
        self.conversation.end(user, EndReason.DELETED, update_id)
        self.analytics.delete_profile(user.user_id)
        records = self.repository.export_user(user.user_id) if user.age_refused else None
        counts = self.repository.delete_user(user.user_id)
        if records is not None and records.profile.age_answered_at is not None:
            self.repository.confirm_age(user.user_id, False, records.profile.age_answered_at)
        answer.send(t("deleteme.done", messages=counts.get("messages", 0),
                      exclusions=counts.get("exclusions", 0),
                      chats=counts.get("chats_anonymised", 0)))
        return "deleteme:deleted"

    def refuse_age(self, user: UserState, answer: Answer, update_id: int) -> str:
        """A No to the age question, from any prompt, old ones too: binding at once.

        The user leaves the lobby and any chat (the partner told as on any end), and
        everything stored about them is erased but the refusal marker, which keeps the
        gate closed for the refusal period (``domain.age_gate``). The answer names the
        contact address for a mistaken answer.
        """
        t = self.catalog.for_user(user)
        # The refusal first: erasure keeps its marker, so an erasure cut short (re-run by
        # Telegram's re-delivery, or finished by the job) leaves the gate closed. The rest
        # runs on a No pressed again too (a refusal's re-delivery finds the refusal
        # stored, and its time is kept: the refusal period does not start again).
        if not user.age_refused:
            self.repository.confirm_age(user.user_id, False, self.clock())
        self.conversation.withdraw(user, update_id)
        self.analytics.delete_profile(user.user_id)
        self.repository.delete_user(user.user_id)
        outcome = "age:no:again" if user.age_refused else "age:no"
        answer.send(t("age.refused_erased", min_age=self.terms.min_age,
                      days=self.terms.periods.age_refusal_days, contact=self.terms.contact))
        return outcome

    def reminders_choice(self, user: UserState, argument: str, answer: Answer) -> str:
        """/reminders off|on; without an argument, the current state."""
        t = self.catalog.for_user(user)
        choice = argument.strip().lower()
        if choice in ("off", "on"):
            self.repository.set_reminders(user.user_id, enabled=choice == "on")
            answer.send(t(f"reminders.{choice}"))
            return f"reminders:{choice}"
        answer.send(t("reminders.status", state=t("analytics.state_on" if user.reminders_enabled
                                                  else "analytics.state_off")))
        return "reminders:status"

    def analytics_choice(self, user: UserState, argument: str, answer: Answer) -> str:
        """/analytics off|on sets the objection; without an argument, the current state."""
        t = self.catalog.for_user(user)
        choice = argument.strip().lower()
        if choice in ("off", "on"):
            opt_out = choice == "off"
            self.repository.set_analytics_opt_out(user.user_id, opt_out)
            answer.send(t("analytics.off" if opt_out else "analytics.on"))
            return f"analytics:{choice}"
        state = t("analytics.state_off" if user.analytics_opt_out else "analytics.state_on")
        answer.send(t("analytics.status", state=state))
        return "analytics:status"
