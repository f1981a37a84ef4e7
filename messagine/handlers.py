"""pyTelegramBotAPI handlers: each translates one kind of update into a service call.

Commands and buttons are not listed here: they come from the route table
(messagine.routes), matched case-insensitively. pyTelegramBotAPI checks handlers in
registration order and runs the first that matches, so commands come before the
catch-all relay. Every handler records its outcome on the update context for the log
line; none holds a rule of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from telebot import TeleBot, types

from messagine import context, keyboards, routes
from messagine.analytics import Analytics
from messagine.answer import Answer
from messagine.catalog import Catalog
from messagine.routes import Call, Route, Services
from messagine.telegram import Telegram, TelegramBlocked, TelegramRejected

PRIVATE = ["private"]
GROUPS = ["group", "supergroup"]


def _any_content(handler: Callable[[types.Message], None], chat_types: list[str]
                 ) -> dict[str, Any]:
    """A message handler entry with no content-type filter (the library's dict format)."""
    return {"function": handler, "pass_bot": False, "filters": {"chat_types": chat_types}}


def _done(outcome: str) -> None:
    context.current().outcome = outcome


class Handlers:
    """The bot's handlers, bound to the services they call."""

    def __init__(self, services: Services, telegram: Telegram, catalog: Catalog,
                 analytics: Analytics) -> None:
        self.services = services
        self.telegram = telegram
        self.catalog = catalog
        self.analytics = analytics

    def register(self, bot: TeleBot) -> None:
        """Attach every handler to ``bot``, in the order they are tried."""
        bot.register_message_handler(
            self.command, chat_types=PRIVATE, content_types=["text"],
            func=lambda message: routes.command_route(message.text) is not None)
        # No content-type filter: whatever the library makes of the content, including
        # nothing, the relay works from the message's envelope.
        bot.add_message_handler(_any_content(self.relay_message, PRIVATE))
        bot.add_message_handler(_any_content(self.group_message, GROUPS))
        bot.add_edited_message_handler(_any_content(self.edited, PRIVATE))
        bot.register_callback_query_handler(self.button, func=lambda _query: True)
        bot.register_my_chat_member_handler(self.membership, func=lambda _update: True)
        bot.register_message_reaction_handler(self.reaction, func=lambda _update: True)

    def _call(self, answer: Answer, argument: str = "",
              message: types.Message | None = None) -> Call:
        ctx = context.current()
        return Call(self.services, ctx.require_user(), answer, ctx.update_id, argument,
                    message)

    def command(self, message: types.Message) -> None:
        """A known command, in any case, with or without @botname."""
        found = routes.command_route(message.text)
        if found is None:  # the filter let it through, so this cannot happen
            raise LookupError("no route for the command")
        route, argument = found
        call = self._call(Answer(self.telegram, message.chat.id), argument, message)
        if route.admin_only and not self.services.moderation.is_admin(call.user.user_id):
            call.answer.send(self.catalog.for_user(call.user)("unknown_command"))
            _done("unknown_command")
            return
        self.analytics.track(call.user, f"command.{route.name}")
        _done(route.action(call))

    def relay_message(self, message: types.Message) -> None:
        """Anything a user sends in a chat; an unknown /word outside a chat is answered."""
        call = self._call(Answer(self.telegram, message.chat.id))
        user = call.user
        envelope = context.current().require_envelope()
        if routes.parse_command(envelope.text) is not None and user.chat is None:
            t = self.catalog.for_user(user)
            call.answer.send(t("unknown_command"), keyboards.for_state(t, user))
            self.analytics.track(user, "command.unknown")
            _done("unknown_command")
            return
        _done(self.services.relay.relay(user, envelope, call.update_id))

    def group_message(self, message: types.Message) -> None:
        """The bot is for private chats: it leaves any group but the moderators'."""
        if message.chat.id == self.services.moderation.settings.admin_chat_id:
            _done("moderators_chat:ignored")
            return
        self._leave_group(message.chat.id)

    def edited(self, message: types.Message) -> None:
        """An edit of a relayed message is mirrored on its copy."""
        ctx = context.current()
        _done(self.services.relay.edit(ctx.require_user(), ctx.require_envelope(), message))

    def button(self, query: types.CallbackQuery) -> None:
        """A button press: a route's button, or Ban/Dismiss in the moderators' chat."""
        ctx = context.current()
        # A query older than about 15 s can no longer be answered; the press still counts.
        with contextlib.suppress(TelegramRejected):
            self.telegram.answer_callback(query.id)
        message = query.message
        data = str(query.data or "")
        moderation = self.services.moderation
        if data.startswith(routes.MODERATOR_BUTTONS) and message is not None:
            if moderation.is_admin(query.from_user.id):
                _done(moderation.resolve(query.from_user.id, data, message.chat.id,
                                         message.message_id, ctx.update_id))
            else:
                _done("mod:not_admin")
            return
        if message is None or message.chat.type != "private" or ctx.user is None:
            _done("button:ignored")
            return
        found = routes.button_route(data)
        if found is None:
            self.analytics.track(ctx.user, "action.unknown")
            _done("button:unknown")
            return
        route, argument = found
        newest = self.services.conversation.is_newest(ctx.user, message.message_id)
        self._press(route, self._call(
            Answer(self.telegram, message.chat.id, message.message_id, newest=newest),
            argument))

    def _press(self, route: Route, call: Call) -> None:
        self.analytics.track(call.user, f"action.{route.name}")
        _done("button:" + route.action(call))

    def reaction(self, update: types.MessageReactionUpdated) -> None:
        """A reaction to a message in a private chat: mirrored on the other side."""
        ctx = context.current()
        if update.chat.type != "private" or ctx.user is None:
            _done("reaction:ignored")
            return
        raw = ctx.raw or {}
        _done(self.services.reactions.mirror(
            ctx.user, update.message_id, raw.get("old_reaction") or [],
            raw.get("new_reaction") or []))

    def membership(self, update: types.ChatMemberUpdated) -> None:
        """The bot was blocked, unblocked, or added to or removed from a group."""
        ctx = context.current()
        status = update.new_chat_member.status
        if update.chat.type in GROUPS:
            if update.chat.id == self.services.moderation.settings.admin_chat_id:
                _done("moderators_chat:" + status)
            elif status in ("member", "administrator"):
                self._leave_group(update.chat.id)
            else:
                _done("group:left")
            return
        if update.chat.type != "private" or ctx.user is None:
            _done("membership:ignored")
            return
        conversation = self.services.conversation
        if status == "kicked":
            _done(conversation.bot_blocked(ctx.user, ctx.update_id))
        elif status == "member":
            _done(conversation.bot_unblocked(ctx.user))
        else:
            _done("membership:" + status)

    def _leave_group(self, chat_id: int) -> None:
        t = self.catalog.for_language("en")
        try:
            self.telegram.send_text(chat_id, t("private_only"))
            self.telegram.leave_chat(chat_id)
        except (TelegramBlocked, TelegramRejected):
            pass  # already removed from the group, or not allowed to write there
        _done("group:left")
