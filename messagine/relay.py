"""The relay service: what a user sends in a chat reaches the partner as a copy.

Every message goes out with copyMessage, so captions and formatting stay and no origin
header is added, and the pair (original, copy) is kept in the message log so that replies
land on the right message, edits are mirrored and /delete removes the partner's copy.
Once a copy is delivered nothing after it may make the update retryable (a retry would
deliver it twice), so a failure to record the link is logged and tolerated.

Two rules hold a message back (messagine.safety): a contact, a location or a venue waits
for its sender's Send, and links and usernames wait out the first minutes of a chat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from telebot import types

from messagine import keyboards, safety
from messagine.albums import AlbumRelay
from messagine.analytics import Analytics
from messagine.answer import Answer
from messagine.catalog import Catalog
from messagine.conversation import Conversation
from messagine.envelope import Envelope, Location
from messagine.models import ActiveChat, MessageLink, UserState
from messagine.storage.port import MessageLog, Users
from messagine.telegram import (
    CallWithdrawn,
    StillWanted,
    Telegram,
    TelegramBlocked,
    TelegramError,
    TelegramRejected,
)

log = logging.getLogger(__name__)

NOT_COPYABLE = "can't be copied"
"""What Telegram's 400 says for content a bot may not copy (service messages, invoices,
giveaways, paid media, a quiz whose answer the bot does not know)."""


class RelayStore(MessageLog, Users, Protocol):
    """The storage roles the relay uses: the message log, and users (a chat that still lasts)."""


class Relay:
    """Copies, replies, edits and deletions between the two users of a chat."""

    def __init__(
        self, repository: RelayStore, telegram: Telegram, catalog: Catalog,
        conversation: Conversation, clock: Callable[[], float], analytics: Analytics,
        hold_links_minutes: int = 0, albums: AlbumRelay | None = None,
    ) -> None:
        self.albums = albums
        self.hold_links_minutes = hold_links_minutes
        self.analytics = analytics
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.conversation = conversation
        self.clock = clock

    def relay(self, user: UserState, message: Envelope, update_id: int) -> str:
        """Copy ``message`` to the partner, as a reply where it replies to a chat message.

        Whatever the content, known to pyTelegramBotAPI or not: Telegram copies by chat and
        message id. What Telegram refuses to copy is reported to the sender. A link or a
        username in the chat's first minutes is held back, and a contact or a location
        waits for its sender's Send (messagine.safety).
        """
        t = self.catalog.for_user(user)
        if user.chat is None:
            key, keyboard = (("relay.waiting", keyboards.lobby(t)) if user.waiting
                             else ("relay.idle", keyboards.idle(t)))
            self.telegram.send_text(user.user_id, t(key), keyboard)
            return "relay:not_in_chat"
        chat = user.chat
        if safety.links_held(message, chat.started_at, self.clock(), self.hold_links_minutes):
            self.telegram.send_text(user.user_id, t.plural(
                "relay.links_held", self.hold_links_minutes))
            return "relay:link_held"
        if safety.needs_confirmation(message):
            return self._ask_to_share(user, chat, message)
        if message.media_group_id is not None and self.albums is not None:
            # Sent a moment later with the rest of its album (copyMessages takes no reply).
            return self.albums.collect(user, chat, message, update_id)
        reply_to = None
        if message.reply_to_message_id is not None:
            link = self.repository.find_message(
                chat.chat_id, user.user_id, message.reply_to_message_id)
            if link is not None:
                reply_to = (link.copy_message_id if link.sender_id == user.user_id
                            else link.sender_message_id)
        live = message.location if message.live_location else None
        return self._deliver(user, chat, message.message_id, message.content_type, live,
                             reply_to, update_id)

    def _deliver(self, user: UserState, chat: ActiveChat, message_id: int, content_type: str,
                 live_location: Location | None, reply_to: int | None, update_id: int) -> str:
        """Copy message ``message_id`` to the partner and record the link; the outcome."""
        t = self.catalog.for_user(user)
        still_wanted = self._chat_lasts(user.user_id, chat.chat_id)
        try:
            if live_location is not None:
                # A copy of a live location would stand still; a live one follows it.
                copy_id = self.telegram.send_location(chat.partner_id, live_location,
                                                      reply_to, still_wanted)
            else:
                copy_id = self.telegram.copy_message(
                    chat.partner_id, user.user_id, message_id, reply_to, still_wanted)
        except CallWithdrawn:
            # The chat ended while Telegram made us wait: the partner may be in a new
            # chat by now, where this message would seem to come from someone else.
            self.telegram.send_text(user.user_id, t("relay.chat_ended"))
            return "relay:chat_ended"
        except TelegramBlocked:
            self.conversation.partner_unreachable(user, update_id)
            return "relay:partner_unreachable"
        except TelegramRejected as error:
            log.warning("copy refused by Telegram: %s %s", error.code, error.description)
            not_copyable = NOT_COPYABLE in error.description
            self.telegram.send_text(user.user_id, t(
                "relay.unsupported" if not_copyable else "relay.failed"))
            self.analytics.track(user, f"message.invalid.{content_type}")
            return f"relay:not_copyable:{content_type}" if not_copyable \
                else "relay:rejected"
        if not self._landed_in_its_chat(still_wanted, chat.partner_id, copy_id):
            self.telegram.send_text(user.user_id, t("relay.chat_ended"))
            return "relay:chat_ended"
        link = MessageLink(
            chat_id=chat.chat_id, sender_id=user.user_id, sender_message_id=message_id,
            recipient_id=chat.partner_id, copy_message_id=copy_id,
            content_type=content_type, sent_at=self.clock(),
        )
        try:
            self.repository.record_message(link)
        except Exception:  # the copy is delivered: whatever failed, the update succeeded
            log.exception("relayed message delivered but its link was not recorded")
        self.analytics.track(user, f"message.{content_type}")
        return "relayed"

    # -- a contact or a location waits for its sender's Send -------------------------------

    def _ask_to_share(self, user: UserState, chat: ActiveChat, message: Envelope) -> str:
        """Ask before a contact or a location goes to a stranger; nothing is relayed yet."""
        t = self.catalog.for_user(user)
        key = ("share.confirm_contact" if message.content_type == "contact" else
               "share.confirm_live" if message.live_location else "share.confirm_location")
        self.telegram.send_text(
            user.user_id, t(key),
            keyboards.confirm_share(t, safety.pack(message, chat.chat_id)),
            reply_to=message.message_id)
        return f"relay:confirm_asked:{message.content_type}"

    def confirm_share(self, user: UserState, argument: str, answer: Answer, update_id: int
                      ) -> str:
        """Send pressed: relay the held message once, and only into the chat it was sent in."""
        t = self.catalog.for_user(user)
        held = safety.unpack(argument)
        chat = user.chat
        if held is None or chat is None or chat.chat_id != held.chat_id:
            # A press after the chat ended, or in a later chat, must not reach a new partner.
            answer.send(t("share.chat_ended"))
            return "share:chat_ended"
        if self.repository.find_message(chat.chat_id, user.user_id, held.message_id):
            answer.send(t("share.sent"))
            return "share:already_sent"
        outcome = self._deliver(user, chat, held.message_id, held.content_type,
                                held.live_location, None, update_id)
        if outcome != "relayed":
            answer.send(t("share.not_sent"))
            return "share:" + outcome
        answer.send(t("share.sent"))
        return "share:sent"

    def cancel_share(self, user: UserState, answer: Answer) -> str:
        """Don't send pressed: nothing is relayed, and the prompt says so."""
        answer.send(self.catalog.for_user(user)("share.not_sent"))
        return "share:not_sent"

    def _landed_in_its_chat(self, still_wanted: StillWanted, recipient_id: int,
                            copy_id: int) -> bool:
        """Whether the chat still lasted once the copy was made; if not, take the copy back.

        Chats never restart, so a chat that lasts after the copy was made lasted while it
        was made. One that ended during the call (the partner ran /next while the copy was
        in flight) may have a new partner by now, who would take the copy for theirs: it
        is deleted. A failure to ask the store counts as "it lasted" (the copy is most
        likely where it belongs, and a lost message is worse).
        """
        try:
            lasted = still_wanted()
        except Exception:  # noqa: BLE001 - see above
            log.warning("could not check that a copy's chat still lasts")
            return True
        if lasted:
            return True
        try:
            self.telegram.delete_message(recipient_id, copy_id)
        except TelegramError as error:
            log.warning("a copy that landed after its chat ended could not be deleted: %s %s",
                        error.method, error.code)
        return False

    def _chat_lasts(self, user_id: int, chat_id: int) -> StillWanted:
        """The question asked after a 429 wait: is ``user_id`` still in chat ``chat_id``."""

        def still_in_chat() -> bool:
            state = self.repository.get_user(user_id)
            return state is not None and state.chat is not None and \
                state.chat.chat_id == chat_id

        return still_in_chat

    def edit(self, user: UserState, edited: Envelope, message: types.Message) -> str:
        """Mirror an edit on the partner's copy: text, caption, or a live location's move."""
        if user.chat is None:
            return "edit:not_in_chat"
        link = self.repository.find_message(user.chat.chat_id, user.user_id, edited.message_id)
        if link is None or link.sender_id != user.user_id:
            return "edit:unknown_message"
        if safety.links_held(edited, user.chat.started_at, self.clock(),
                             self.hold_links_minutes):
            t = self.catalog.for_user(user)
            self.telegram.send_text(user.user_id, t.plural(
                "relay.link_edit_held", self.hold_links_minutes))
            return "edit:link_held"
        still_wanted = self._chat_lasts(user.user_id, link.chat_id)
        try:
            if edited.location is not None:
                return self._move(link, edited)
            if edited.media is not None:
                # Telegram does not say whether the media or only the caption changed, so
                # the copy gets both (the same file id costs no upload).
                self.telegram.edit_media(link.recipient_id, link.copy_message_id, edited.media,
                                         edited.caption, message.caption_entities,
                                         still_wanted)
            elif edited.text is not None:
                self.telegram.edit_text(link.recipient_id, link.copy_message_id, edited.text,
                                        entities=message.entities, still_wanted=still_wanted)
            elif edited.caption is not None:
                self.telegram.edit_caption(link.recipient_id, link.copy_message_id,
                                           edited.caption, entities=message.caption_entities,
                                           still_wanted=still_wanted)
            else:
                return "edit:unsupported"
        except CallWithdrawn:
            return "edit:chat_ended"
        except TelegramBlocked:
            return "edit:partner_unreachable"
        except TelegramRejected as error:
            log.info("edit refused by Telegram: %s %s", error.code, error.description)
            return "edit:rejected"
        return "edited"

    def _move(self, link: MessageLink, edited: Envelope) -> str:
        """A live location moved (or stopped: its edit carries no live period any more)."""
        location = edited.location
        if location is None:
            return "edit:unsupported"
        if location.live_period is None:
            self.telegram.stop_live_location(link.recipient_id, link.copy_message_id)
            return "edit:live_location_stopped"
        self.telegram.edit_live_location(link.recipient_id, link.copy_message_id, location)
        return "edit:live_location_moved"

    def delete(self, user: UserState, message: types.Message, answer: Answer) -> str:
        """/delete as a reply to one of your messages deletes the partner's copy."""
        t = self.catalog.for_user(user)
        target = message.reply_to_message
        if target is None:
            answer.send(t("delete.how"))
            return "delete:how"
        link = (self.repository.find_message(user.chat.chat_id, user.user_id, target.message_id)
                if user.chat is not None else None)
        if link is None or link.sender_id != user.user_id:
            answer.send(t("delete.not_found"))
            return "delete:not_found"
        try:
            self.telegram.delete_message(link.recipient_id, link.copy_message_id,
                                         self._chat_lasts(user.user_id, link.chat_id))
        except (TelegramRejected, TelegramBlocked, CallWithdrawn):
            answer.send(t("delete.failed"))
            return "delete:rejected"
        answer.send(t("delete.done"))
        return "deleted"
