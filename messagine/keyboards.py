"""Inline keyboards and the callback data their buttons carry.

Labels come from the catalog; the callback data each button carries comes from the route
table (messagine.routes), which maps it back to the same service call as the command.
"""

from __future__ import annotations

from messagine.catalog import Texts
from messagine.languages import LANGUAGES, TOP_LANGUAGES, language_name
from messagine.models import UserState
from messagine.routes import MOD_BAN, MOD_DISMISS, button
from messagine.telegram import Keyboard

FIND = button("find_chat")
CANCEL_FIND = button("cancel_find")
EXIT = button("exit_chat")
EXIT_YES = button("exit_yes")
EXIT_NO = button("exit_no")
LANGUAGE = button("set_language")
LANGUAGE_ALL = button("language_all")
LANGUAGE_TOP = button("language_top")
SET_LANGUAGE = button("choose_language")
HELP = button("help")
ABOUT = button("about")
SAY_HI = button("say_hi")
ANY_LANGUAGE = button("any_language")
AGE_YES = button("age_yes")
AGE_NO = button("age_no")
DELETE_YES = button("deleteme_yes")
DELETE_NO = button("deleteme_no")
REPORT = button("report_reason")
REPORT_CANCEL = button("report_cancel")
SHARE_SEND = button("share_send")
SHARE_CANCEL = button("share_cancel")
RATE = button("rate")
REPORT_CHAT = button("report_chat")
REPORT_REASONS = ("spam", "abuse", "minor", "other")


def welcome_new(t: Texts) -> Keyboard:
    """Under the first welcome: [Find Chat, Language] [About, Help]."""
    return [[(t("btn.find_chat"), FIND), (t("btn.language"), LANGUAGE)],
            [(t("btn.about"), ABOUT), (t("btn.help"), HELP)]]


def idle(t: Texts) -> Keyboard:
    """For a user with no chat: [Find Chat, Help]."""
    return [[(t("btn.find_chat"), FIND), (t("btn.help"), HELP)]]


def lobby(t: Texts, *, offer_any: bool = False) -> Keyboard:
    """For a waiting user: ([Chat with anyone]) [Stop searching] [Language, Help]."""
    offer = [[(t("btn.any_language"), ANY_LANGUAGE)]] if offer_any else []
    return [*offer, [(t("btn.exit_lobby"), CANCEL_FIND)],
            [(t("btn.language"), LANGUAGE), (t("btn.help"), HELP)]]


def for_state(t: Texts, user: UserState) -> Keyboard:
    """The keyboard that agrees with the user's state: in a chat, searching, or neither."""
    if user.chat is not None:
        return in_chat(t)
    return lobby(t) if user.waiting else idle(t)


def in_chat(t: Texts) -> Keyboard:
    """For a user in a chat: [Exit Chat, Help]."""
    return [[(t("btn.exit_chat"), EXIT), (t("btn.help"), HELP)]]


def chat_started(t: Texts) -> Keyboard:
    """Under the chat-start notice: [Say Hi, Exit Chat]."""
    return [[(t("btn.say_hi"), SAY_HI), (t("btn.exit_chat"), EXIT)]]


def confirm_share(t: Texts, argument: str) -> Keyboard:
    """Before a contact or a location is relayed: [Send, Don't send]."""
    return [[(t("btn.share_send"), SHARE_SEND + argument),
             (t("btn.share_cancel"), SHARE_CANCEL)]]


def after_hi(t: Texts) -> Keyboard:
    """The chat-start notice once hi was said: [Exit Chat]."""
    return [[(t("btn.exit_chat"), EXIT)]]


def confirm_exit(t: Texts) -> Keyboard:
    """The exit confirmation: [Yes ✅, No ❌]."""
    return [[(t("btn.yes"), EXIT_YES), (t("btn.no"), EXIT_NO)]]


def help_menu(t: Texts, user: UserState) -> Keyboard:
    """Help: one button for the user's state, then [Language, About]."""
    if user.chat is not None:
        first = (t("btn.exit_chat"), EXIT)
    elif user.waiting:
        first = (t("btn.exit_lobby"), CANCEL_FIND)
    else:
        first = (t("btn.find_chat"), FIND)
    return [[first], [(t("btn.language"), LANGUAGE), (t("btn.about"), ABOUT)]]


def language_picker(t: Texts, current: str, *, show_all: bool) -> Keyboard:
    """Languages two per row, the current one ticked; the top ten or all, with a toggle."""
    codes = list(LANGUAGES) if show_all else list(TOP_LANGUAGES)
    buttons = [(("✓ " if code == current else "") + language_name(code), SET_LANGUAGE + code)
               for code in codes]
    rows: list[list[tuple[str, str]]] = [buttons[i:i + 2] for i in range(0, len(buttons), 2)]
    toggle = (t("btn.top_languages"), LANGUAGE_TOP) if show_all else (
        t("btn.all_languages"), LANGUAGE_ALL)
    rows.append([toggle])
    return rows


def age_question(t: Texts, min_age: int) -> Keyboard:
    """The one-tap age confirmation before a first chat."""
    return [[(t("btn.age_yes", min_age=min_age), AGE_YES), (t("btn.age_no"), AGE_NO)]]


def confirm_delete(t: Texts) -> Keyboard:
    """The erasure confirmation."""
    return [[(t("btn.delete_yes"), DELETE_YES)], [(t("btn.delete_no"), DELETE_NO)]]


def report_reasons(t: Texts, chat: str = "") -> Keyboard:
    """The reasons a reporter chooses from, and Cancel (``chat``: the card's chat id)."""
    suffix = f":{chat}" if chat else ""
    rows = [[(t(f"btn.report_{reason}"), REPORT + reason + suffix)]
            for reason in REPORT_REASONS]
    return [*rows, [(t("btn.cancel"), REPORT_CANCEL)]]


def moderation(t: Texts, report_id: int) -> Keyboard:
    """Under a report in the moderators' chat: [Ban, Dismiss]."""
    return [[(t("btn.mod_ban"), f"{MOD_BAN}{report_id}"),
             (t("btn.mod_dismiss"), f"{MOD_DISMISS}{report_id}")]]


def any_language_offer(t: Texts) -> Keyboard:
    """The offer to a long wait: [Chat with anyone] [Stop searching]."""
    return [[(t("btn.any_language"), ANY_LANGUAGE)], [(t("btn.exit_lobby"), CANCEL_FIND)]]


def chat_ended(t: Texts, chat_id: int) -> Keyboard:
    """The end-of-chat card: [👍, 👎] [Report, Next chat]."""
    return [[("👍", f"{RATE}up:{chat_id}"), ("👎", f"{RATE}down:{chat_id}")],
            *after_rating(t, chat_id)]


def after_rating(t: Texts, chat_id: int) -> Keyboard:
    """The card once its chat was rated: [Report, Next chat]."""
    return [[(t("btn.report"), f"{REPORT_CHAT}{chat_id}"), (t("btn.next_chat"), FIND)]]


def after_card(t: Texts) -> Keyboard:
    """A card whose chat can no longer be rated or reported: [Next chat]."""
    return [[(t("btn.next_chat"), FIND)]]
