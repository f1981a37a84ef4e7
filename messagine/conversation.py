"""The conversation service: the rules of the lobby and of chats.

Starting, searching, leaving the lobby, ending a chat (with confirmation), /next, the
language, help and about. Each method takes the sender's state as the update opened it,
makes at most the storage calls its rule needs (each atomic in the repository) and
sends the notices. A re-delivered update that had already changed state (``resumed``)
sends its notices again rather than reporting a different state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

from messagine import keyboards
from messagine.analytics import Analytics, now_iso
from messagine.answer import Answer
from messagine.catalog import Catalog, Texts
from messagine.domain import matching
from messagine.domain.age_gate import Gate, gate
from messagine.languages import LANGUAGES, language_name
from messagine.models import (
    ActiveChat,
    EndedChat,
    EndReason,
    MatchOutcome,
    MatchResult,
    UserState,
)
from messagine.storage.port import Chats, Lobby, MessageLog, ModerationRecords, Users
from messagine.telegram import Telegram, TelegramBlocked

log = logging.getLogger(__name__)

# A partner found to have blocked the bot is dropped and the search goes on; bounded so a
# run of stale lobby entries cannot hold the request past its deadline.
_MAX_MATCH_ATTEMPTS = 3


class ConversationStore(Users, Lobby, Chats, MessageLog, ModerationRecords, Protocol):
    """The storage roles a conversation uses: users, lobby, chats, message log and bans."""


class Conversation:
    """The lobby and chat rules for one bot instance."""

    def __init__(
        self, repository: ConversationStore, telegram: Telegram, catalog: Catalog,
        recent_partners: int, clock: Callable[[], float], analytics: Analytics,
        min_age: int = 0, contact: str = "",
    ) -> None:
        self.min_age = min_age
        self.contact = contact
        self.analytics = analytics
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.recent_partners = recent_partners
        self.clock = clock

    def texts(self, language: str) -> Texts:
        """The catalog for a user's language (English where there is none)."""
        return self.catalog.for_language(language)

    # -- where answers go ----------------------------------------------------------------

    def is_newest(self, user: UserState, message_id: int) -> bool:
        """Whether the bot's message ``message_id`` is the newest in the user's chat.

        Newer are the texts the bot sent the user since (``UserState.newest_message``) and,
        in a chat, the user's own last message and the last copy of the partner's (the
        message log; copies are not noted one by one, so a relay costs no extra write).
        """
        if message_id < user.newest_message:
            return False
        chat = user.chat
        if chat is None:
            return True
        own = self.repository.recent_messages(chat.chat_id, user.user_id, 1)
        if own and own[-1] > message_id:
            return False
        theirs = self.repository.recent_messages(chat.chat_id, chat.partner_id, 1)
        link = theirs and self.repository.find_message(chat.chat_id, chat.partner_id,
                                                       theirs[-1])
        return not (link and link.copy_message_id > message_id)

    # -- start, help, about --------------------------------------------------------------

    def start(self, user: UserState, answer: Answer) -> str:
        """Welcome a new user (naming their language) or greet a returning one."""
        t = self.catalog.for_user(user)
        if user.is_new:
            answer.send(t("start.welcome_new", language=language_name(user.language)),
                        keyboards.welcome_new(t))
            self.analytics.update_profile(user, set_once={"$created": now_iso()},
                                          set_values={"language": user.language})
            return "start:new"
        answer.send(t("start.welcome_back"), keyboards.for_state(t, user))
        return "start:known"

    def help(self, user: UserState, answer: Answer) -> str:
        """The help text with a button for the user's state."""
        t = self.catalog.for_user(user)
        answer.send(t("help.text"), keyboards.help_menu(t, user))
        return "help"

    def about(self, user: UserState, answer: Answer) -> str:
        """Counts of users, chats and waiting users."""
        counts = self.repository.counts(user.user_id)
        t = self.catalog.for_user(user)
        answer.send(t("about.text", users=counts.users, active_chats=counts.active_chats,
                      previous_chats=counts.previous_chats,
                      my_previous_chats=counts.my_previous_chats, waiting=counts.waiting))
        return "about"

    # -- the lobby -----------------------------------------------------------------------

    def find_chat(self, user: UserState, answer: Answer, update_id: int, *,
                  any_language: bool = False) -> str:
        """Pair the user at once with a compatible waiting user, or put them in the lobby.

        Past the age gate first, whatever the route; ``any_language``: the user accepted
        the offer of the any-language pool, where their wait moves before the search.
        Queued, they are told honestly that nobody they can be paired with is searching
        (and how many others are), and offered the any-language pool unless they are in it.
        """
        t = self.catalog.for_user(user)
        verdict = gate(user, self.min_age)  # every route to a partner comes through here
        if verdict is Gate.CLOSED:
            answer.send(t("age.closed", min_age=self.min_age, contact=self.contact),
                        keyboards.idle(t))
            return "find:age_refused"
        if verdict is Gate.ASK:
            answer.send(t("age.question", min_age=self.min_age),
                        keyboards.age_question(t, self.min_age))
            return "find:age_asked"
        if self.repository.apply_erased_ban(user.user_id):  # banned while they were away
            answer.send(t("banned.notice"))
            return "find:banned"
        if any_language and not self.repository.join_any_language(user.user_id):
            answer.send(t("lobby.not_in"), keyboards.for_state(t, user))
            return "find:not_waiting"
        for _ in range(_MAX_MATCH_ATTEMPTS):
            result = self.repository.find_partner(
                user.user_id, self.recent_partners, self.clock(), update_id)
            if result.outcome is MatchOutcome.IN_CHAT:
                answer.send(t("chat.active"), keyboards.in_chat(t))
                return "find:in_chat"
            if result.outcome is MatchOutcome.AGE_REFUSED:  # a No since this update began
                answer.send(t("age.closed", min_age=self.min_age, contact=self.contact),
                            keyboards.idle(t))
                return "find:age_refused"
            if result.outcome is MatchOutcome.WAITING:
                answer.send(_searching(t, user, result, any_language=any_language),
                            keyboards.lobby(t, offer_any=not any_language))
                return "find:waiting"
            if result.outcome is MatchOutcome.ALREADY_WAITING:
                answer.send(t("lobby.joined_any") if any_language else t("lobby.already"),
                            keyboards.lobby(t))
                return "find:already_waiting"
            assert result.chat is not None  # noqa: S101 - MATCHED always carries the chat
            if self._announce_chat(user, result.chat, answer, update_id):
                if not result.resumed:
                    # Only the acting user's own activity: how long the partner waited is
                    # the partner's, who may have objected to analytics.
                    self.analytics.track(user, "chat.started", {"language": user.language})
                    self.analytics.update_profile(user, increment={"chats": 1})
                return "find:matched"
        answer.send(t("lobby.already"), keyboards.lobby(t))
        return "find:partners_unreachable"

    def _announce_chat(
        self, user: UserState, chat: ActiveChat, answer: Answer, update_id: int
    ) -> bool:
        """Tell both users the chat started; False if the partner turned out unreachable."""
        partner_t = self.texts(chat.partner_language)
        try:
            self.telegram.send_text(chat.partner_id, _chat_started(partner_t),
                                    keyboards.chat_started(partner_t))
        except TelegramBlocked:
            # The partner blocked the bot while waiting: drop them and search again.
            self.repository.end_chat(
                user.user_id, EndReason.PARTNER_UNREACHABLE, self.clock(), update_id)
            self.repository.set_blocked(chat.partner_id, blocked=True)
            return False
        t = self.catalog.for_user(user)
        answer.send(_chat_started(t), keyboards.chat_started(t))
        return True

    def join_any_language(self, user: UserState, answer: Answer, update_id: int) -> str:
        """The user opted into the any-language pool: move their wait there and search."""
        outcome = self.find_chat(user, answer, update_id, any_language=True)
        if outcome == "find:not_waiting":
            return "any_language:not_waiting"
        return "any_language+" + outcome.removeprefix("find:")

    def confirm_age(self, user: UserState, answer: Answer, update_id: int) -> str:
        """A Yes to the age question: recorded, then the search; after a No it stands.

        (A No is ``Privacy.refuse_age``: it erases the user.)
        """
        if not user.age_refused:
            self.repository.confirm_age(user.user_id, True, self.clock())
            user = replace(user, age_confirmed=True)
        return "age:yes+" + self.find_chat(user, answer, update_id).removeprefix("find:")

    def withdraw(self, user: UserState, update_id: int) -> None:
        """Take the user out of the lobby and out of their chat, before their erasure.

        The partner is told as when any chat ends; no analytics, the user is leaving.
        The lobby first: once out of it, no search can pair them any more.
        """
        self.repository.leave_lobby(user.user_id)
        ended = self.repository.end_chat(user.user_id, EndReason.DELETED, self.clock(),
                                         update_id)
        if ended is not None:
            self._tell_partner(ended, "exit.closed_by_partner")

    def cancel_find(self, user: UserState, answer: Answer) -> str:
        """Leave the lobby."""
        t = self.catalog.for_user(user)
        if self.repository.leave_lobby(user.user_id):
            answer.send(t("lobby.left"), keyboards.idle(t))
            return "cancel_find:left"
        answer.send(t("lobby.not_in"), keyboards.in_chat(t) if user.chat else keyboards.idle(t))
        return "cancel_find:not_waiting"

    # -- ending chats --------------------------------------------------------------------

    def ask_exit(self, user: UserState, answer: Answer) -> str:
        """Ask for confirmation before ending a chat, or say why there is nothing to end."""
        t = self.catalog.for_user(user)
        if user.chat is not None:
            answer.send(t("exit.confirm"), keyboards.confirm_exit(t))
            return "exit:asked"
        if user.waiting:
            answer.send(t("exit.in_lobby"), keyboards.lobby(t))
            return "exit:in_lobby"
        answer.send(t("exit.idle"), keyboards.idle(t))
        return "exit:idle"

    def exit_chat(self, user: UserState, answer: Answer, update_id: int) -> str:
        """End the chat (confirmed); each side is told once, even if both confirm at once."""
        t = self.catalog.for_user(user)
        ended = self.end(user, EndReason.EXIT, update_id)
        if ended is None:
            # The chat it was about is over, whatever the state said when the update came.
            answer.send(t("exit.already_ended"), keyboards.for_state(t, replace(user, chat=None)))
            return "exit:already_ended"
        answer.send(card(t, "exit.closed_by_you"), keyboards.chat_ended(t, ended.chat_id))
        return "exit:closed"

    def keep_chat(self, user: UserState, answer: Answer) -> str:
        """The user said No to ending the chat."""
        t = self.catalog.for_user(user)
        answer.send(t("exit.kept") if user.chat else t("exit.already_ended"),
                    None if user.chat else keyboards.for_state(t, user))
        return "exit:kept"

    def next_chat(self, user: UserState, answer: Answer, update_id: int) -> str:
        """End the current chat without confirmation and search again."""
        ended = self.end(user, EndReason.NEXT, update_id) if user.chat else None
        if ended is not None:
            t = self.catalog.for_user(user)
            answer.send(card(t, "exit.closed_by_you"), keyboards.chat_ended(t, ended.chat_id))
        # The search sees the user as they are now: out of the chat just ended.
        outcome = self.find_chat(replace(user, chat=None) if ended else user, answer,
                                 update_id)
        return ("next:ended+" if ended is not None else "next:") + outcome.removeprefix("find:")

    def end(self, user: UserState, reason: EndReason, update_id: int) -> EndedChat | None:
        """End the user's chat and tell the partner only that it ended; None if none."""
        ended = self.repository.end_chat(user.user_id, reason, self.clock(), update_id)
        if ended is None:
            return None
        if not ended.resumed:  # a resumed ending was logged by the attempt that made it
            log.info("chat ended: %s", reason.value,
                     extra={"json_fields": {"chat_end_reason": reason.value}})
        self._tell_partner(ended, "exit.closed_by_partner")
        self._track_end(user, ended, reason)
        return ended

    def _track_end(self, user: UserState, ended: EndedChat, reason: EndReason) -> None:
        """chat.ended: how long, how many messages this user sent, who ended it and how.

        Nothing about the partner (not even their message count): they may have objected.
        """
        if ended.resumed or user.chat is None or not self.analytics.enabled_for(user):
            return
        sent = self.repository.count_messages(ended.chat_id)
        self.analytics.track(user, "chat.ended", {
            "duration_seconds": round(self.clock() - user.chat.started_at, 1),
            "messages_sent": sent.get(user.user_id, 0),
            "ended_by": "partner" if reason is EndReason.PARTNER_UNREACHABLE else "self",
            "how": reason.value, "language": user.language})

    def _tell_partner(self, ended: EndedChat, key: str) -> None:
        """Give the partner of an ended chat its card; mark them if they blocked us."""
        partner_t = self.texts(ended.partner_language)
        try:
            self.telegram.send_text(ended.partner_id, card(partner_t, key),
                                    keyboards.chat_ended(partner_t, ended.chat_id))
        except TelegramBlocked:
            self.repository.set_blocked(ended.partner_id, blocked=True)

    def partner_unreachable(self, user: UserState, update_id: int) -> None:
        """The partner blocked the bot: end the chat, mark them, give the user the card."""
        ended = self.repository.end_chat(
            user.user_id, EndReason.PARTNER_UNREACHABLE, self.clock(), update_id)
        t = self.catalog.for_user(user)
        if ended is None:
            self.telegram.send_text(user.user_id, t("partner.unreachable"), keyboards.idle(t))
            return
        self.repository.set_blocked(ended.partner_id, blocked=True)
        self._track_end(user, ended, EndReason.PARTNER_UNREACHABLE)
        self.telegram.send_text(user.user_id, card(t, "partner.unreachable"),
                                keyboards.chat_ended(t, ended.chat_id))

    def bot_blocked(self, user: UserState, update_id: int) -> str:
        """The user blocked the bot: mark them, leave the lobby, end the chat, tell the partner."""
        self.repository.set_blocked(user.user_id, blocked=True)
        self.analytics.track(user, "user.blocked_bot")
        ended = self.repository.end_chat(
            user.user_id, EndReason.BLOCKED, self.clock(), update_id)
        if ended is None:
            return "blocked_bot"
        self._tell_partner(ended, "partner.unreachable")
        self._track_end(user, ended, EndReason.BLOCKED)
        return "blocked_bot:chat_ended"

    def bot_unblocked(self, user: UserState) -> str:
        """The user unblocked the bot (or started it again): clear the mark."""
        self.repository.set_blocked(user.user_id, blocked=False)
        self.analytics.track(user, "user.returned")
        return "unblocked_bot"

    # -- saying hi -----------------------------------------------------------------------

    def say_hi(self, user: UserState, answer: Answer, update_id: int) -> str:
        """Send a greeting, in the partner's language, to the partner."""
        t = self.catalog.for_user(user)
        if user.chat is None:
            answer.send(t("hi.not_in_chat"), keyboards.for_state(t, user))
            return "hi:not_in_chat"
        partner_t = self.texts(user.chat.partner_language)
        try:
            self.telegram.send_text(user.chat.partner_id, partner_t("hi.greeting"))
        except TelegramBlocked:
            self.partner_unreachable(user, update_id)
            return "hi:partner_unreachable"
        if answer.carrying_message_id is not None:
            # The sign that it went: on the notice the button sat on, which loses it.
            self.telegram.edit_text(answer.chat_id, answer.carrying_message_id,
                                    _chat_started(t) + "\n\n" + t("hi.sent"),
                                    keyboard=keyboards.after_hi(t))
        return "hi:sent"

    # -- language ------------------------------------------------------------------------

    def show_languages(self, user: UserState, answer: Answer, *, show_all: bool = False) -> str:
        """The language picker (top ten, or all)."""
        t = self.catalog.for_user(user)
        if user.chat is not None:
            answer.send(t("language.in_chat"), keyboards.in_chat(t))
            return "language:in_chat"
        answer.send(t("language.choose", language=language_name(user.language)),
                    keyboards.language_picker(t, user.language, show_all=show_all))
        return "language:picker"

    def toggle_languages(self, user: UserState, answer: Answer, *, show_all: bool) -> str:
        """Switch the picker between the top ten and all languages, in place."""
        message_id = answer.carrying_message_id
        if message_id is None or user.chat is not None:
            return self.show_languages(user, answer, show_all=show_all)
        t = self.catalog.for_user(user)
        self.telegram.edit_keyboard(answer.chat_id, message_id,
                                    keyboards.language_picker(t, user.language, show_all=show_all))
        return "language:all" if show_all else "language:top"

    def set_language(self, user: UserState, language: str, answer: Answer, update_id: int) -> str:
        """Change the matching language; a waiting user is searched for again in the new pool."""
        if language not in LANGUAGES:
            return self.show_languages(user, answer)
        updated = self.repository.set_language(user.user_id, language)
        if updated.language == language:
            self.analytics.update_profile(updated, set_values={"language": language})
        if updated.chat is not None:
            t = self.catalog.for_user(updated)
            answer.send(t("language.in_chat"), keyboards.in_chat(t))
            return "language:in_chat"
        t = self.catalog.for_user(updated)
        if not updated.waiting:
            answer.send(t("language.set", language=language_name(language)), keyboards.idle(t))
            return "language:set"
        answer.send(t("language.set", language=language_name(language)))
        return "language:set+" + self.find_chat(updated, Answer(
            self.telegram, user.user_id), update_id).removeprefix("find:")


def _searching(t: Texts, user: UserState, result: MatchResult, *, any_language: bool) -> str:
    """What a search that queued the user says.

    Nobody they can be paired with is searching (the matching rule), how many others are,
    and the offer of the any-language pool, unless they are in it.
    """
    if any_language:
        return t("lobby.joined_any")
    name = language_name(user.language)
    lines = [t("lobby.joined", language=name), t("lobby.only_you", language=name)]
    if others := matching.unpairable_others(result):
        lines.append(t("lobby.others_unpairable", language=name, count=others))
    return "\n\n".join([*lines, t("lobby.any_hint")])


def _chat_started(t: Texts) -> str:
    """The chat-start notice, with the one-line safety tip at the moment it matters."""
    return t("chat.started") + "\n\n" + t("chat.safety_tip")


def card(t: Texts, ended_key: str) -> str:
    """The end-of-chat card's text: who ended it (``ended_key``), and the rating prompt."""
    return t(ended_key) + "\n\n" + t("card.rate_prompt")
