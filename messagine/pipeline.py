"""The update pipeline: from a decoded JSON update to a finished dispatch.

parse -> find the sender -> claim the update_id (drop re-deliveries) and load the sender's
state in one storage call -> pyTelegramBotAPI dispatch (threaded=False, so all work ends
before we return) -> an HTTP status for the webhook. A failure a retry can fix answers
503 and releases the claim so that Telegram's re-delivery is processed; input that can
never succeed answers 200 so it does not stall the chat's queue at Telegram.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from telebot import TeleBot, types, util

from messagine import context, routes
from messagine.analytics import Analytics, NoAnalytics
from messagine.catalog import Catalog
from messagine.domain import claims
from messagine.envelope import minimal_update
from messagine.envelope import read as envelope_of
from messagine.languages import language_for
from messagine.models import OpenedUpdate, Profile, UserState
from messagine.payload import problem as payload_problem
from messagine.storage.port import Chats, MessageLog, StorageUnavailable, UpdateClaims, Users
from messagine.telegram import (
    Telegram,
    TelegramError,
    TelegramUnavailable,
    reset_deadline,
    sent_messages,
    set_deadline,
    track_sent,
)

log = logging.getLogger("messagine.updates")


MESSAGE_KINDS = ("message", "edited_message")

HANDLED_KINDS = ("message", "edited_message", "callback_query", "my_chat_member",
                 "message_reaction")
"""The update kinds the bot handles; set-webhook asks Telegram for these only."""

KNOWN_KINDS = tuple(dict.fromkeys((*HANDLED_KINDS, *util.update_types)))
"""Every update kind pyTelegramBotAPI knows (its own list), ours first."""


class PipelineStore(UpdateClaims, MessageLog, Users, Chats, Protocol):
    """The storage roles the pipeline uses: claims, the message log, the newest messages.

    And a user's last chat: whether an unfinished update's text reached it.
    """


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one update: the HTTP status to answer and a short outcome."""

    status: int
    outcome: str


class Pipeline:
    """Processes one update at a time per thread; shared by the webhook and polling."""

    def __init__(
        self, bot: TeleBot, repository: PipelineStore, telegram: Telegram, catalog: Catalog,
        clock: Callable[[], float] = time.time, analytics: Analytics | None = None,
        request_timeout_s: float = claims.REQUEST_TIMEOUT_S,
    ) -> None:
        self.analytics = analytics or NoAnalytics()
        self.lease_s = claims.lease_for(request_timeout_s)
        self.budget_s = claims.budget_for(request_timeout_s)
        self.bot = bot
        self.repository = repository
        self.telegram = telegram
        self.catalog = catalog
        self.clock = clock

    def process(self, payload: Mapping[str, Any]) -> Result:
        """Handle one decoded update; never raises."""
        started = time.perf_counter()
        update_id = payload.get("update_id")
        kind = next((k for k in KNOWN_KINDS if k in payload), "unknown")
        content_type: str | None = None
        result: Result
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            result = Result(200, "ignored:no_update_id")
        elif kind not in HANDLED_KINDS:
            result = Result(200, f"ignored:kind:{kind}")
        else:
            result, content_type = self._process(update_id, kind, payload)
        fields = {
            "update_id": update_id if isinstance(update_id, int) else None, "kind": kind,
            "content_type": content_type, "outcome": result.outcome, "status": result.status,
            "backend": self.repository.backend,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        log.info(
            "update_id=%s kind=%s content=%s outcome=%s status=%s backend=%s ms=%.1f",
            fields["update_id"] or "-", kind, content_type or "-", result.outcome,
            result.status, fields["backend"], fields["latency_ms"],
            extra={"json_fields": fields},
        )
        return result

    def _process(
        self, update_id: int, kind: str, payload: Mapping[str, Any]
    ) -> tuple[Result, str | None]:
        reason = payload_problem(payload, kind)
        if reason is not None:
            log.warning("update %s ignored: %s", update_id, reason)
            return Result(200, "ignored:malformed"), None
        envelope = (envelope_of(payload[kind]) if kind in MESSAGE_KINDS else None)
        update = _parse(update_id, kind, payload)
        if update is None:
            return Result(200, "ignored:malformed"), None
        sender, chat = _sender_and_chat(update, kind)
        content_type = (envelope.content_type if envelope is not None
                        else getattr(getattr(update, kind), "content_type", None))
        if update.callback_query is not None and chat is None:
            return self._answered(update, Result(200, "button:no_message")), content_type
        if sender is None or chat is None:
            return Result(200, "ignored:no_sender"), content_type
        if sender.is_bot:
            return Result(200, "ignored:from_bot"), content_type
        if envelope is not None and envelope.silent:
            # A note Telegram adds about the chat (a pin, a timer): nobody typed it.
            return Result(200, f"ignored:service:{envelope.content_type}"), content_type
        owner = secrets.token_hex(8)  # this attempt, as its claim names it
        opened = self._open(update_id, update, kind, sender, chat, owner)
        if isinstance(opened, Result):
            return self._answered(update, opened), content_type
        stopped = self._stop_before_dispatch(opened, _is_privacy_request(update, kind),
                                             _dropped(update, kind))
        if stopped is not None:
            self._finish(update_id, opened.user, owner)
            return self._answered(update, stopped), content_type
        ctx = context.UpdateContext(update_id, opened.user, envelope=envelope,
                                    raw=payload[kind])
        token = context.enter(ctx)
        deadline = set_deadline(time.monotonic() + self.budget_s)
        sent = track_sent()
        try:
            self.bot.process_new_updates([update])
            result = Result(200, ctx.outcome)
        except (StorageUnavailable, TelegramUnavailable) as error:
            return self._release(update_id, error, owner), content_type
        except TelegramError as error:
            log.warning("telegram refused %s: %s %s", error.method, error.code, error.description)
            result = Result(200, f"telegram_refused:{error.method}")
        except Exception:
            log.exception("update %s failed", update_id)
            self._apologise(ctx, chat)
            result = Result(200, "error")
        finally:
            self._note_newest(sent_messages(sent))
            reset_deadline(deadline)
            context.leave(token)
            self.analytics.flush()
        # Answered 200: whatever Telegram does with the answer, the work is not redone.
        self._finish(update_id, opened.user, owner)
        return result, content_type

    def _note_newest(self, sent: Mapping[int, int]) -> None:
        """Remember the newest message the bot sent each user in this update.

        A later button press asks whether it sits on the newest message. Best effort: a
        failure only means one answer edits a message that was not the newest.
        """
        for chat_id, message_id in sent.items():
            if chat_id <= 0:  # a group (the moderators'), not a user
                continue
            try:
                self.repository.note_newest(chat_id, message_id)
            except Exception as error:  # noqa: BLE001 - see above
                log.warning("newest message of a user not noted (%s)", type(error).__name__)

    def _finish(self, update_id: int, user: UserState | None, owner: str) -> None:
        """Mark the claim done, so a re-delivery is answered 200 with no work.

        Best effort: if this write fails, a re-delivery finds the claim in progress, waits
        out its lease (503s) and then resumes, which finds the work done.
        """
        try:
            self.repository.finish_update(update_id, user.user_id if user else None, owner)
        except Exception as error:  # noqa: BLE001 - the update is done; see above
            log.warning("update %s done but its claim not marked done (%s)", update_id,
                        type(error).__name__)

    def _open(self, update_id: int, update: types.Update, kind: str, sender: types.User,
              chat: types.Chat, owner: str) -> OpenedUpdate | Result:
        """Claim the update (and load the sender), or the answer that ends it here."""
        profile = None
        if chat.type == "private":
            profile = Profile(sender.id, sender.first_name or "", sender.last_name,
                              sender.username, sender.language_code)
        try:
            opened = self.repository.open_update(
                update_id, profile, language_for(sender.language_code), self.clock(),
                getattr(getattr(update, kind), "media_group_id", None), owner=owner,
                lease_s=self.lease_s)
        except Exception as error:  # whatever failed, nothing of the update is done yet
            if isinstance(error, StorageUnavailable):
                _log_outage(update_id, error)
            else:  # an error the store gave that no adapter knows: retried, loudly
                log.exception("claiming update %s failed; it will be retried", update_id)
            # The claim may have been stored before the answer was lost (a timeout); if
            # it stayed, Telegram's re-delivery would be taken for a duplicate.
            with contextlib.suppress(Exception):
                self.repository.release_update(update_id, owner)
            return Result(503, "retry:storage")
        if opened.duplicate:
            return Result(200, "duplicate")
        if opened.busy:
            # A dropped connection does not stop the first attempt: it may still be
            # running (or waiting out a 429). Telegram tries again later and finds it done.
            log.warning("update %s is being processed by another attempt: answering 503",
                        update_id)
            return Result(503, "retry:in_progress")
        if not opened.resumed:
            return opened
        try:
            unfinished = self._unfinished(update, kind, chat, opened.user)
        except Exception as error:  # whatever failed, nothing of the update is done yet
            if isinstance(error, StorageUnavailable):
                _log_outage(update_id, error)
            else:
                log.exception("re-checking update %s failed; it will be retried", update_id)
            with contextlib.suppress(Exception):
                self.repository.release_update(update_id, owner)
            return Result(503, "retry:storage")
        if unfinished is None:
            self._finish(update_id, opened.user, owner)
            return Result(200, "duplicate")
        return opened

    def _stop_before_dispatch(self, opened: OpenedUpdate, privacy_request: bool,
                              dropped: tuple[int | None, str | None]) -> Result | None:
        """Floods and banned users (but for their privacy rights) stop here.

        A dropped update is named to its sender: a message by a reply to it, a button
        press by the press's own answer.
        """
        user = opened.user
        if opened.throttled:
            if opened.warn and user is not None:
                message_id, callback_id = dropped
                text = self.catalog.for_user(user)("flood.slow_down")
                try:
                    if callback_id is not None:
                        self.telegram.answer_callback(callback_id, text)
                    else:
                        self.telegram.send_text(user.user_id, text, reply_to=message_id)
                except TelegramError as error:
                    log.warning("could not say an update was dropped: %s %s", error.method,
                                error.code)
            return Result(200, "throttled:warned" if opened.warn else "throttled")
        if user is not None and user.banned and not privacy_request:
            self._tell(user.user_id, user, "banned.notice")
            return Result(200, "banned")
        return None

    def _unfinished(self, update: types.Update, kind: str, chat: types.Chat,
                    user: UserState | None) -> UserState | None:
        """The sender, when an update whose first attempt died must be processed again.

        Its claim's lease expired before it was marked done: the attempt was killed or
        its process stopped mid-request (or failed and could not give its claim back). A
        message is relayed again unless its copy's link exists (written right after the
        copy: a message that has one was relayed), its sender told it was not delivered
        if its chat has ended since; a command is run
        again, which every command tolerates (a search or an ending resumes by update id,
        the rest answer again), and so is a button whose route ``resumes`` (a search,
        ending a chat, a report or rating, the age answers, erasure: a crash half way
        would otherwise leave them half done). Other buttons are taken as done.
        """
        if chat.type != "private" or user is None:
            return None
        query = update.callback_query if kind == "callback_query" else None
        if query is not None:
            found = routes.button_route(query.data or "")
            resumes = found is not None and found[0].resumes and (
                not user.banned or found[0].while_banned)
            return user if resumes else None
        message = update.message if kind == "message" else None
        if message is None or message.from_user is None:
            return None
        if user.banned:
            return None
        # Relayed already if its link exists, in the chat or, once it has ended, in the
        # last one (an unknown /word in a chat is relayed too). A text that was not, with
        # the chat ended meanwhile, runs again: its sender is told it was not delivered.
        chat_id = user.chat.chat_id if user.chat else getattr(
            self.repository.last_chat(user.user_id), "chat_id", None)
        if chat_id is not None and self.repository.find_message(
                chat_id, user.user_id, message.message_id) is not None:
            return None
        log.warning("update %s was claimed by an attempt that died: processing it again",
                    update.update_id)
        return user

    def _answered(self, update: types.Update, result: Result) -> Result:
        """A press that stops before its handler still gets its answer (the spinner stops).

        A dropped press was answered with its notice already.

        Best effort: a press answered before (a re-delivery) or too old is refused by
        Telegram, which changes nothing.
        """
        query = update.callback_query
        if query is not None and result.status == 200 and result.outcome != "throttled:warned":
            try:
                self.telegram.answer_callback(query.id)
            except TelegramError as error:
                log.info("button press not answered: %s %s", error.method, error.code)
        return result

    def _release(self, update_id: int, error: Exception, owner: str) -> Result:
        where = "telegram" if isinstance(error, TelegramError) else "storage"
        log.error("update %s will be retried: %s unavailable (%s)", update_id, where, error)
        try:
            self.repository.release_update(update_id, owner)
        except Exception:  # the re-delivery then finds the claim and decides again
            log.exception("could not release the claim of update %s", update_id)
        return Result(503, f"retry:{where}")

    def _apologise(self, ctx: context.UpdateContext, chat: types.Chat) -> None:
        """Tell the user something went wrong (never a raw error); best effort."""
        if ctx.user is not None and chat.type == "private":
            self._tell(chat.id, ctx.user, "error.generic")

    def _tell(self, chat_id: int, user: UserState, key: str) -> None:
        """Send one catalog text, best effort: a failure is logged, never raised."""
        try:
            self.telegram.send_text(chat_id, self.catalog.for_user(user)(key))
        except TelegramError as error:
            log.warning("could not send %s: %s %s", key, error.method, error.code)


def _dropped(update: types.Update, kind: str) -> tuple[int | None, str | None]:
    """What a dropped update's notice refers to: the message id, or the button press's id."""
    item = getattr(update, kind)
    if kind == "callback_query":
        return None, str(item.id)
    return getattr(item, "message_id", None), None


def _is_privacy_request(update: types.Update, kind: str) -> bool:
    """Privacy rights stay with everyone, banned users included (the route table says which)."""
    item = getattr(update, kind)
    if kind == "callback_query":
        return routes.allowed_while_banned(None, str(item.data or ""))
    return kind == "message" and routes.allowed_while_banned(getattr(item, "text", None) or "",
                                                             None)


def _parse(update_id: int, kind: str, payload: Mapping[str, Any]) -> types.Update | None:
    """The library's update; for a message it cannot parse, a minimal one it can.

    pyTelegramBotAPI rejects a whole update when any required field is missing anywhere
    inside it; the relay does not need what it rejects (it works from the envelope), and
    commands need only the sender, the chat, the text and the replied-to message id.
    """
    update: types.Update
    try:
        update = types.Update.de_json(dict(payload))
        _sender_and_chat(update, kind)
    except Exception:  # noqa: BLE001 - any malformed field means "not a usable update"
        if kind not in MESSAGE_KINDS:
            return None
        log.info("update %s: the library could not parse the message; using its envelope",
                 update_id)
        update = types.Update.de_json(minimal_update(update_id, kind, payload[kind]))
    return update


def _sender_and_chat(
    update: types.Update, kind: str
) -> tuple[types.User | None, types.Chat | None]:
    item = getattr(update, kind)
    if kind == "callback_query":
        message = item.message
        return item.from_user, (message.chat if message is not None else None)
    if kind == "message_reaction":  # an anonymous (chat) reaction has no user
        return item.user, item.chat
    return item.from_user, item.chat


def _log_outage(update_id: int, error: StorageUnavailable) -> None:
    # One line, no traceback: an outage is not a bug.
    log.error("update %s will be retried: storage unavailable (%s)", update_id, error)
