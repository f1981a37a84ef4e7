"""The album relay: a media group reaches the partner as one album, with copyMessages.

Each item's update only puts the item into the album's record (``domain.albums``) and, for
the first item of a batch, asks the schedule (``messagine.schedule``) to flush it a moment
later. The flush is its own piece of work (a Cloud Task's request, or a timer here): it
claims the batch, copies all its items in one copyMessages call while the chat lasts, and
records a link per item, so replies, edits and /delete work on each. What cannot reach the
partner (the chat ended, the partner blocked the bot, Telegram refused) is told to the
sender, as for a single message.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from messagine.analytics import Analytics
from messagine.catalog import Catalog
from messagine.conversation import Conversation
from messagine.domain import albums
from messagine.domain.albums import Album, Batch, Item, Verdict
from messagine.envelope import Envelope
from messagine.models import ActiveChat, MessageLink, UserState
from messagine.storage.port import AlbumRecords, MessageLog, StorageUnavailable, Users
from messagine.telegram import (
    CallWithdrawn,
    Telegram,
    TelegramBlocked,
    TelegramError,
    TelegramRejected,
    TelegramUnavailable,
)

log = logging.getLogger("messagine.albums")

Schedule = Callable[[str, int], None]
"""Arrange for batch (album key, number) to be flushed soon (``messagine.schedule``)."""


class AlbumStore(AlbumRecords, MessageLog, Users, Protocol):
    """The storage roles the album relay uses: album records, the message log, users."""


@dataclass(frozen=True, slots=True)
class Flushed:
    """What one flush did; ``retry``: it must be tried again later (HTTP 503 for a task)."""

    outcome: str
    retry: bool = False


class AlbumRelay:
    """Collects an album's items and sends each batch once, as one album."""

    def __init__(self, repository: AlbumStore, telegram: Telegram, catalog: Catalog,
                 conversation: Conversation, clock: Callable[[], float],
                 analytics: Analytics, lease_s: float = albums.LEASE_S) -> None:
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.conversation = conversation
        self.clock = clock
        self.analytics = analytics
        self.lease_s = lease_s
        """How long a flush's claim holds (``claims.lease_for`` the request timeout)."""
        self.schedule: Schedule | None = None

    def collect(self, user: UserState, chat: ActiveChat, message: Envelope,
                update_id: int) -> str:
        """Put one item of an album into its record; the first of a batch schedules the flush.

        Raises ``StorageUnavailable`` when the store or the schedule cannot be reached:
        the update is then retried, and adding the item again changes nothing.
        """
        group = message.media_group_id or ""
        key = albums.album_key(chat.chat_id, user.user_id, group)
        item = Item(message.message_id, message.content_type)
        now = self.clock()
        added = self.repository.change_album(key, lambda album: albums.add_item(
            album, key, chat.chat_id, user.user_id, item, now, update_id))
        if added.schedule and self.schedule is not None:
            self.schedule(key, added.batch)
        return "album:duplicate" if added.duplicate else "album:collected"

    def flush(self, key: str, number: int, *, last_attempt: bool = False) -> Flushed:
        """Send batch ``number`` of album ``key`` once; never raises.

        On the ``last_attempt`` the schedule will make, a flush that would be retried
        gives up instead, and the sender learns that the album did not arrive.
        """
        try:
            flushed = self._flush(key, number)
            if last_attempt and flushed.retry:
                self._tell_not_sent(key)
                return self._logged(key, number, Flushed("album:given_up"))
            return flushed
        finally:
            self.analytics.flush()  # the flush is its own request (or timer): send its events

    def _tell_not_sent(self, key: str) -> None:
        """Best effort: the store or Telegram may still be away."""
        try:
            album = self.repository.change_album(key, lambda album: (None, album))
            user = self.repository.get_user(album.sender_id) if album is not None else None
            if user is not None:
                self.telegram.send_text(user.user_id,
                                        self.catalog.for_user(user)("relay.failed"))
        except Exception:  # noqa: BLE001 - nothing more can be done for it
            log.warning("album given up; its sender could not be told")

    def _flush(self, key: str, number: int) -> Flushed:
        owner = secrets.token_hex(8)
        now = self.clock()
        try:
            claimed = self.repository.change_album(
                key, lambda album: albums.claim(album, number, owner, now, lease_s=self.lease_s))
        except StorageUnavailable:
            return self._logged(key, number, Flushed("retry:storage", retry=True))
        album, batch = claimed.album, claimed.batch
        if claimed.verdict is not Verdict.SEND or album is None or batch is None:
            retry = claimed.verdict in (Verdict.WAIT, Verdict.BUSY)
            return self._logged(key, number, Flushed(f"album:{claimed.verdict.value}", retry))
        try:
            outcome = self._send(album, batch, resumed=claimed.resumed)
        except (StorageUnavailable, TelegramUnavailable) as error:
            with contextlib.suppress(Exception):  # else its lease runs out, then a retry
                self.repository.change_album(
                    key, lambda album: albums.release(album, number, owner))
            where = "telegram" if isinstance(error, TelegramError) else "storage"
            return self._logged(key, number, Flushed(f"retry:{where}", retry=True))
        except Exception:
            # A bug: sending again would fail the same way; the sender is not left waiting.
            log.exception("album flush failed")
            outcome = "album:error"
        try:
            self.repository.change_album(key, lambda album: albums.finish(album, number, owner))
        except Exception:  # noqa: BLE001 - its lease runs out; a retry then finds the links
            log.warning("album sent but not marked sent")
        return self._logged(key, number, Flushed(outcome), len(batch.items))

    def _send(self, album: Album, batch: Batch, *, resumed: bool) -> str:
        """Copy the batch to the partner while the sender's chat lasts; the outcome."""
        user = self.repository.get_user(album.sender_id)
        if user is None:
            return "album:sender_gone"
        chat = user.chat
        t = self.catalog.for_user(user)
        if chat is None or chat.chat_id != album.chat_id:
            self.telegram.send_text(user.user_id, t("relay.chat_ended"))
            return "album:chat_ended"
        ids = [item.message_id for item in batch.items]
        if resumed and self.repository.find_message(chat.chat_id, user.user_id, ids[0]):
            return "album:sent_before"  # the flush that died had sent it

        def still_in_chat() -> bool:
            state = self.repository.get_user(user.user_id)
            return state is not None and state.chat is not None and \
                state.chat.chat_id == album.chat_id

        try:
            copies = self.telegram.copy_messages(chat.partner_id, user.user_id, ids,
                                                 still_in_chat)
        except CallWithdrawn:
            self.telegram.send_text(user.user_id, t("relay.chat_ended"))
            return "album:chat_ended"
        except TelegramBlocked:
            self.conversation.partner_unreachable(user, batch.update_id)
            return "album:partner_unreachable"
        except TelegramRejected as error:
            log.warning("album refused by Telegram: %s", error.code)
            self.telegram.send_text(user.user_id, t("relay.failed"))
            return "album:rejected"
        # From here the copies exist: nothing may fail the flush, or a retry sends again.
        if not _lasted(still_in_chat):
            # The partner left while the copies were made: they may have someone new.
            for copy_id in copies:
                with contextlib.suppress(TelegramError):
                    self.telegram.delete_message(chat.partner_id, copy_id)
            with contextlib.suppress(TelegramError):
                self.telegram.send_text(user.user_id, t("relay.chat_ended"))
            return "album:chat_ended"
        self._record(user, chat, batch.items, copies)
        self.analytics.track(user, "message.album")
        return "album:sent"

    def _record(self, user: UserState, chat: ActiveChat, items: tuple[Item, ...],
                copies: list[int]) -> None:
        """One link per item; Telegram skips what it cannot copy, and then nothing maps."""
        if len(copies) != len(items):
            log.warning("album copied %s of %s items: its items are not linked",
                        len(copies), len(items))
            return
        now = self.clock()
        try:
            for item, copy_id in zip(items, copies, strict=True):
                self.repository.record_message(MessageLink(
                    chat.chat_id, user.user_id, item.message_id, chat.partner_id, copy_id,
                    item.content_type, now))
        except Exception:  # the album is delivered: whatever failed, the flush succeeded
            log.exception("album delivered but its links were not all recorded")

    @staticmethod
    def _logged(key: str, number: int, flushed: Flushed, items: int = 0) -> Flushed:
        # The key's last part is a hash of the media group: no user id in the line.
        album = key.rsplit("-", 1)[-1]
        log.info("album=%s batch=%s items=%s outcome=%s", album, number, items,
                 flushed.outcome, extra={"json_fields": {
                     "album": album, "batch": number, "items": items,
                     "outcome": flushed.outcome}})
        return flushed


def _lasted(still_in_chat: Callable[[], bool]) -> bool:
    """Whether the chat lasted once the copies were made.

    A store that cannot say counts as "it lasted" (the copies are most likely where they
    belong, and a doubled album is worse), as for one message (``Relay``).
    """
    try:
        return still_in_chat()
    except Exception:  # noqa: BLE001 - see above
        log.warning("could not check that an album's chat still lasts")
        return True
