"""The Telegram gateway: the bot's only way to call the Bot API.

It points pyTelegramBotAPI at the configured API URL, sends every call as a POST form
body (the library's default puts parameters, message text included, in the URL query,
where proxies and error messages would show it), bounds each call with timeouts, and
turns the library's and requests' exceptions into three kinds the services act on:
``TelegramUnavailable`` (retry later), ``TelegramBlocked`` (403: the user blocked the bot)
and ``TelegramRejected`` (any other 4xx: retrying will not help). None of them carries
the request URL, which holds the bot token. Every failed call is one INFO line naming the
method and the error code (``api_method``, ``api_error_code``: 0 for a network error or a
timeout), which the log-based metric of Bot API errors counts.
"""

from __future__ import annotations

import contextvars
import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import requests
import telebot
from telebot import apihelper, types

from messagine.envelope import Location, Media

log = logging.getLogger("messagine.telegram")

T = TypeVar("T")
Keyboard = Sequence[Sequence[tuple[str, str]]]
"""Rows of (label, callback data) inline buttons."""


class TelegramError(Exception):
    """A Bot API call failed; ``method`` and ``code`` say which and how (no URL, no content)."""

    def __init__(self, method: str, code: int, description: str) -> None:
        self.method = method
        self.code = code
        self.description = description
        super().__init__(f"{method} failed: {code} {description}")


class TelegramUnavailable(TelegramError):  # noqa: N818 - named for what the caller does
    """Network error, timeout, 5xx or 429: the same call may succeed later."""

    def __init__(
        self, method: str, code: int, description: str, retry_after: float | None = None
    ) -> None:
        super().__init__(method, code, description)
        self.retry_after = retry_after


class TelegramBlocked(TelegramError):  # noqa: N818
    """403: the user blocked the bot (or deleted their account)."""


class TelegramRejected(TelegramError):  # noqa: N818
    """Any other 4xx: the request can never succeed as it is."""


class CallWithdrawn(Exception):  # noqa: N818 - named for what happened
    """The caller withdrew a call that waited out a 429; Telegram performed nothing.

    What the call was for no longer holds: a relayed message whose chat ended meanwhile.
    """

    def __init__(self, method: str) -> None:
        self.method = method
        super().__init__(f"{method} withdrawn after a 429 wait")


StillWanted = Callable[[], bool]
"""Asked before a call is repeated after a 429 wait: False withdraws it."""


# The monotonic time by which the current update must be answered; a 429 is waited out
# only when its retry_after ends well before it (otherwise: 503, and Telegram re-delivers).
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "telegram_deadline", default=None)
_RETRY_MARGIN_S = 2.0


def set_deadline(deadline: float | None) -> contextvars.Token[float | None]:
    """Bound the waits of this update's Bot API calls (``time.monotonic()`` based)."""
    return _deadline.set(deadline)


def reset_deadline(token: contextvars.Token[float | None]) -> None:
    """Forget the update's deadline."""
    _deadline.reset(token)


# The newest message the bot sent into each chat during the current update (copies are
# not counted: the message log knows them), so that the pipeline can remember it.
_sent: contextvars.ContextVar[dict[int, int] | None] = contextvars.ContextVar(
    "telegram_sent", default=None)


def track_sent() -> contextvars.Token[dict[int, int] | None]:
    """Start noting the messages this update sends (see ``sent_messages``)."""
    return _sent.set({})


def sent_messages(token: contextvars.Token[dict[int, int] | None]) -> dict[int, int]:
    """Stop noting; the newest message id the bot sent into each chat meanwhile."""
    sent = _sent.get() or {}
    _sent.reset(token)
    return sent


def _note_sent(chat_id: int, message_id: int) -> int:
    sent = _sent.get()
    if sent is not None:
        sent[chat_id] = max(sent.get(chat_id, 0), message_id)
    return message_id


class _FormPostSender:
    """pyTelegramBotAPI's request sender, replaced: POST bodies, one session per thread."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(
        self, method: str, url: str, params: dict[str, Any] | None = None,
        files: Any = None, timeout: Any = None, proxies: Any = None,
    ) -> requests.Response:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        del method  # always POST: the Bot API accepts it for every method
        # ``timeout`` is (connect, read) from apihelper's limits, longer for long polling.
        return session.post(url, data=params, files=files, timeout=timeout, proxies=proxies)


def configure_transport(api_url: str, timeout_s: float) -> None:
    """Point pyTelegramBotAPI at ``api_url`` with bounded, body-only requests (per process)."""
    apihelper.API_URL = api_url.rstrip("/") + "/bot{0}/{1}"  # type: ignore[assignment]
    apihelper.CONNECT_TIMEOUT = min(5.0, timeout_s)  # type: ignore[assignment]
    apihelper.READ_TIMEOUT = timeout_s  # type: ignore[assignment]
    apihelper.CUSTOM_REQUEST_SENDER = _FormPostSender()  # type: ignore[assignment]
    # The library logs request parameters (message text) at DEBUG: keep it quiet.
    telebot.logger.setLevel("CRITICAL")


def _classify(method: str, error: Exception) -> TelegramError:
    if isinstance(error, apihelper.ApiTelegramException):
        code = int(error.error_code)
        description = str(error.description)
        if code == 429 or code >= 500:
            retry = (error.result_json.get("parameters") or {}).get("retry_after")
            return TelegramUnavailable(method, code, description,
                                       float(retry) if retry is not None else None)
        if code == 403:
            return TelegramBlocked(method, code, description)
        return TelegramRejected(method, code, description)
    if isinstance(error, apihelper.ApiHTTPException):
        status = int(error.result.status_code)
        if status == 429 or status >= 500:
            return TelegramUnavailable(method, status, "HTTP error")
        if status == 403:
            return TelegramBlocked(method, status, "Forbidden")
        return TelegramRejected(method, status, "HTTP error")
    if isinstance(error, requests.Timeout):
        return TelegramUnavailable(method, 0, "timeout")
    if isinstance(error, requests.RequestException | apihelper.ApiInvalidJSONException):
        return TelegramUnavailable(method, 0, type(error).__name__)
    raise error


class _Entity(types.MessageEntity):
    """A message entity serialised without its unset fields, as Telegram sent it."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


def _entities(entities: list[types.MessageEntity] | None) -> list[types.MessageEntity] | None:
    if not entities:
        return None
    return [_Entity(**{k: v for k, v in vars(e).items() if v is not None}) for e in entities]


def keyboard_markup(rows: Keyboard | None) -> types.InlineKeyboardMarkup | None:
    """An inline keyboard from rows of (label, callback data); None for no keyboard."""
    if rows is None:
        return None
    markup = types.InlineKeyboardMarkup()
    for row in rows:
        markup.row(*(types.InlineKeyboardButton(label, callback_data=data) for label, data in row))
    return markup


class Telegram:
    """The Bot API calls the services make, with errors classified."""

    def __init__(self, bot: telebot.TeleBot) -> None:
        self.bot = bot

    @staticmethod
    def _call(method: str, action: Callable[[], T], still_wanted: StillWanted | None = None
              ) -> T:
        """Make one Bot API call; a 429 is waited out once if the update's deadline allows.

        A 429 means Telegram did not perform the call, so repeating it cannot double a
        message; when the wait does not fit, the caller gets TelegramUnavailable (503).
        After the wait, ``still_wanted`` is asked first: False raises CallWithdrawn.
        """
        for attempt in (1, 2):
            try:
                return action()
            except (apihelper.ApiException, requests.RequestException) as error:
                failure = _classify(method, error)
            # The description may quote a request's text: the method and code only.
            log.info("bot api call failed: %s %s", method, failure.code,
                     extra={"json_fields": {"api_method": method,
                                            "api_error_code": failure.code}})
            deadline = _deadline.get()
            if (attempt == 1 and isinstance(failure, TelegramUnavailable)
                    and failure.code == 429 and failure.retry_after is not None
                    and deadline is not None
                    and time.monotonic() + failure.retry_after + _RETRY_MARGIN_S < deadline):
                time.sleep(failure.retry_after)
                if still_wanted is not None and not still_wanted():
                    raise CallWithdrawn(method) from None
                continue
            raise failure from None
        raise AssertionError("unreachable")  # pragma: no cover

    def send_text(self, chat_id: int, text: str, keyboard: Keyboard | None = None,
                  reply_to: int | None = None) -> int:
        """Send a text message (as a reply to ``reply_to`` if given); returns its message id."""
        reply = (types.ReplyParameters(reply_to, allow_sending_without_reply=True)
                 if reply_to is not None else None)
        message = self._call("sendMessage", lambda: self.bot.send_message(
            chat_id, text, reply_markup=keyboard_markup(keyboard), reply_parameters=reply))
        return _note_sent(chat_id, int(message.message_id))

    def copy_message(
        self, chat_id: int, from_chat_id: int, message_id: int, reply_to: int | None = None,
        still_wanted: StillWanted | None = None,
    ) -> int:
        """Copy a message (no origin header, captions and formatting kept); returns its id."""
        reply = (types.ReplyParameters(reply_to, allow_sending_without_reply=True)
                 if reply_to is not None else None)
        result = self._call("copyMessage", lambda: self.bot.copy_message(
            chat_id, from_chat_id, message_id, reply_parameters=reply), still_wanted)
        return int(result.message_id)

    def copy_messages(self, chat_id: int, from_chat_id: int, message_ids: Sequence[int],
                      still_wanted: StillWanted | None = None) -> list[int]:
        """Copy messages in one call, an album kept together; the copies' ids, in order.

        ``message_ids`` must increase strictly (1-100 of them), as Telegram requires.
        """
        result = self._call("copyMessages", lambda: self.bot.copy_messages(
            chat_id, from_chat_id, list(message_ids)), still_wanted)
        return [int(m.message_id) for m in result]

    def send_location(self, chat_id: int, location: Location, reply_to: int | None = None,
                      still_wanted: StillWanted | None = None) -> int:
        """Send a (live) location with every property of ``location``; returns its id."""
        reply = (types.ReplyParameters(reply_to, allow_sending_without_reply=True)
                 if reply_to is not None else None)
        message = self._call("sendLocation", lambda: self.bot.send_location(
            chat_id, location.latitude, location.longitude, live_period=location.live_period,
            heading=location.heading, horizontal_accuracy=location.horizontal_accuracy,
            proximity_alert_radius=location.proximity_alert_radius, reply_parameters=reply),
            still_wanted)
        return _note_sent(chat_id, int(message.message_id))

    def edit_live_location(self, chat_id: int, message_id: int, location: Location) -> None:
        """Move a live location the bot sent."""
        self._call("editMessageLiveLocation", lambda: self.bot.edit_message_live_location(
            location.latitude, location.longitude, chat_id, message_id,
            heading=location.heading, horizontal_accuracy=location.horizontal_accuracy,
            proximity_alert_radius=location.proximity_alert_radius))

    def stop_live_location(self, chat_id: int, message_id: int) -> None:
        """Stop a live location the bot sent."""
        self._call("stopMessageLiveLocation", lambda: self.bot.stop_message_live_location(
            chat_id, message_id))

    def send_document(self, chat_id: int, file_name: str, content: bytes,
                      caption: str | None = None) -> int:
        """Send a file (sendDocument) made in memory; returns its message id."""
        message = self._call("sendDocument", lambda: self.bot.send_document(
            chat_id, io.BytesIO(content), caption=caption, visible_file_name=file_name))
        # Not noted as the newest message: it is the /mydata file, which shows the newest
        # noted before it, and must show what is stored.
        return int(message.message_id)

    def edit_text(
        self, chat_id: int, message_id: int, text: str,
        entities: list[types.MessageEntity] | None = None, keyboard: Keyboard | None = None,
        still_wanted: StillWanted | None = None,
    ) -> None:
        """Replace a message's text (and keyboard)."""
        self._call("editMessageText", lambda: self.bot.edit_message_text(
            text, chat_id, message_id, entities=_entities(entities),
            reply_markup=keyboard_markup(keyboard)), still_wanted)

    def edit_caption(
        self, chat_id: int, message_id: int, caption: str,
        entities: list[types.MessageEntity] | None = None,
        still_wanted: StillWanted | None = None,
    ) -> None:
        """Replace a media message's caption."""
        self._call("editMessageCaption", lambda: self.bot.edit_message_caption(
            caption, chat_id, message_id, caption_entities=_entities(entities)), still_wanted)

    def edit_media(
        self, chat_id: int, message_id: int, media: Media, caption: str | None,
        entities: list[types.MessageEntity] | None = None,
        still_wanted: StillWanted | None = None,
    ) -> None:
        """Replace a message's media (and caption) with a file Telegram already has."""
        kinds = {"photo": types.InputMediaPhoto, "video": types.InputMediaVideo,
                 "animation": types.InputMediaAnimation, "audio": types.InputMediaAudio,
                 "document": types.InputMediaDocument}
        new = kinds[media.kind](media.file_id, caption=caption,
                                caption_entities=_entities(entities))
        self._call("editMessageMedia", lambda: self.bot.edit_message_media(
            new, chat_id, message_id), still_wanted)

    def set_reaction(self, chat_id: int, message_id: int, emoji: str | None) -> None:
        """Set the bot's reaction on a message to ``emoji``, or remove it (None)."""
        reaction: list[types.ReactionType] = (
            [types.ReactionTypeEmoji(emoji)] if emoji is not None else [])
        self._call("setMessageReaction", lambda: self.bot.set_message_reaction(
            chat_id, message_id, reaction))

    def edit_keyboard(self, chat_id: int, message_id: int, keyboard: Keyboard | None) -> None:
        """Replace (or, with None, remove) a message's inline keyboard."""
        markup = keyboard_markup(keyboard) or types.InlineKeyboardMarkup()
        self._call("editMessageReplyMarkup", lambda: self.bot.edit_message_reply_markup(
            chat_id, message_id, reply_markup=markup))

    def delete_message(self, chat_id: int, message_id: int,
                       still_wanted: StillWanted | None = None) -> None:
        """Delete a message in a chat."""
        self._call("deleteMessage", lambda: self.bot.delete_message(chat_id, message_id),
                   still_wanted)

    def answer_callback(self, callback_id: str, text: str | None = None) -> None:
        """Answer a button press (stops the button's spinner)."""
        self._call("answerCallbackQuery", lambda: self.bot.answer_callback_query(
            callback_id, text=text))

    def leave_chat(self, chat_id: int) -> None:
        """Leave a group the bot was added to."""
        self._call("leaveChat", lambda: self.bot.leave_chat(chat_id))

    def set_webhook(self, url: str, secret: str, allowed_updates: Sequence[str],
                    max_connections: int) -> None:
        """Register the webhook URL with its secret token and the update kinds we handle."""
        self._call("setWebhook", lambda: self.bot.set_webhook(
            url, secret_token=secret, allowed_updates=list(allowed_updates),
            max_connections=max_connections, drop_pending_updates=False))

    def delete_webhook(self) -> None:
        """Remove the webhook (needed before long polling)."""
        self._call("deleteWebhook", self.bot.delete_webhook)

    def webhook_info(self) -> dict[str, Any]:
        """Telegram's view of the webhook: URL, pending updates, last error."""
        info = self._call("getWebhookInfo", self.bot.get_webhook_info)
        return {key: value for key, value in vars(info).items() if value is not None}

    def get_updates(self, offset: int, timeout_s: int, allowed_updates: Sequence[str]
                    ) -> list[dict[str, Any]]:
        """Long-poll for updates, returned as the raw JSON objects a webhook would get."""
        token = self.bot.token
        result: list[dict[str, Any]] = self._call("getUpdates", lambda: apihelper.get_updates(
            token, offset=offset, limit=100, timeout=None, allowed_updates=list(allowed_updates),
            long_polling_timeout=timeout_s))
        return result

    def get_commands(self, language_code: str | None) -> list[tuple[str, str]]:
        """The command menu Telegram shows for one language (None: the default)."""
        menu = self._call("getMyCommands", lambda: self.bot.get_my_commands(
            language_code=language_code))
        return [(str(c.command), str(c.description)) for c in menu or []]

    def set_commands(
        self, commands: Sequence[tuple[str, str]], language_code: str | None
    ) -> None:
        """Set the command menu for one language (None: the default for every language)."""
        menu = [types.BotCommand(name, description) for name, description in commands]
        self._call("setMyCommands", lambda: self.bot.set_my_commands(
            menu, language_code=language_code))
