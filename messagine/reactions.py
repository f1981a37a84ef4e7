"""Reactions: a user's reaction to a relayed message is mirrored on the other side.

A reaction on a message the user received lands on the original in the partner's chat;
on a message they sent, it lands on the partner's copy. Changing or removing it is
mirrored too, only while the chat lasts. A bot may set one standard emoji reaction per
message and no paid ones, so the first standard emoji of the user's reactions is mirrored;
a custom-emoji or paid reaction changes nothing on the other side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from messagine.models import UserState
from messagine.storage.port import MessageLog
from messagine.telegram import Telegram, TelegramBlocked, TelegramRejected

log = logging.getLogger(__name__)


def mirrored_emoji(reactions: Sequence[Mapping[str, Any]]) -> str | None:
    """The reaction a bot can mirror: the first standard emoji, or None for none."""
    for reaction in reactions:
        if reaction.get("type") == "emoji" and isinstance(reaction.get("emoji"), str):
            return str(reaction["emoji"])
    return None


class ReactionStore(MessageLog, Protocol):
    """The storage role reactions use: the message log."""


class Reactions:
    """Mirrors reactions between the two users of a chat."""

    def __init__(self, repository: ReactionStore, telegram: Telegram) -> None:
        self.repository = repository
        self.telegram = telegram

    def mirror(self, user: UserState, message_id: int,
               old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> str:
        """Mirror ``user``'s reactions (``old`` -> ``new``) on message ``message_id``."""
        if user.chat is None:
            return "reaction:not_in_chat"
        link = self.repository.find_message(user.chat.chat_id, user.user_id, message_id)
        if link is None:
            return "reaction:unknown_message"
        before, after = mirrored_emoji(old), mirrored_emoji(new)
        if before == after:
            return "reaction:unchanged"  # e.g. only a custom emoji came or went
        # The other side's message: the copy of one this user sent, or the original of
        # a copy they received.
        target_chat, target_message = ((link.recipient_id, link.copy_message_id)
                                       if link.sender_id == user.user_id
                                       else (link.sender_id, link.sender_message_id))
        try:
            self.telegram.set_reaction(target_chat, target_message, after)
        except TelegramBlocked:
            return "reaction:partner_unreachable"
        except TelegramRejected as error:
            log.info("reaction refused by Telegram: %s %s", error.code, error.description)
            return "reaction:rejected"
        return "reaction:removed" if after is None else "reaction:mirrored"
