"""pyTelegramBotAPI handlers: each translates one kind of update into a service call.

Handlers are checked in registration order and the first match runs, so commands come
before the catch-all relay. Every handler records its outcome on the update context for
the log line; none holds a rule of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from telebot import TeleBot, types

from messagine import context, keyboards
from messagine.analytics import Analytics
from messagine.answer import Answer
from messagine.catalog import Catalog
from messagine.conversation import Conversation
from messagine.models import UserState
from messagine.moderation import ADMIN_COMMANDS, Moderation
from messagine.privacy import Privacy
from messagine.relay import RELAYED_CONTENT_TYPES, Relay
from messagine.telegram import Telegram, TelegramBlocked, TelegramRejected

PRIVATE = ["private"]
GROUPS = ["group", "supergroup"]
# Every content type pyTelegramBotAPI knows, so no private message goes unanswered.
ALL_CONTENT_TYPES = sorted({
    *RELAYED_CONTENT_TYPES, "game", "story", "invoice", "successful_payment",
    "paid_media", "giveaway", "giveaway_winners", "giveaway_completed", "checklist",
    "users_shared", "chat_shared", "write_access_allowed", "web_app_data", "new_chat_members",
    "left_chat_member", "new_chat_title", "new_chat_photo", "delete_chat_photo",
    "group_chat_created", "supergroup_chat_created", "channel_chat_created",
    "migrate_to_chat_id", "migrate_from_chat_id", "pinned_message", "unknown",
})

_Route = Callable[[UserState, Answer, types.Message, int], str]
"""A command's service call: (sender, answer, message, update id) -> outcome."""

COMMANDS = {
    "start": ("start",),
    "find_chat": ("find_chat", "find", "search"),
    "cancel_find": ("cancel_find", "cancel"),
    "exit_chat": ("exit_chat", "stop", "end"),
    "next": ("next",),
    "help": ("help",),
    "about": ("about",),
    "set_language": ("set_language", "language"),
    "delete": ("delete",),
    "privacy": ("privacy",),
    "mydata": ("mydata",),
    "deleteme": ("deleteme",),
    "analytics": ("analytics",),
    "reminders": ("reminders",),
    "report": ("report",),
    "block": ("block",),
}
"""Each command and its aliases; the first name is the one logged and shown in menus."""


def register(
    bot: TeleBot, conversation: Conversation, relay: Relay, privacy: Privacy,
    moderation: Moderation, telegram: Telegram, catalog: Catalog, analytics: Analytics,
) -> None:
    """Attach every handler of the bot to ``bot``."""

    def done(outcome: str) -> None:
        context.current().outcome = outcome

    def user_and_answer(message: types.Message) -> tuple[context.UpdateContext, Answer]:
        ctx = context.current()
        return ctx, Answer(telegram, message.chat.id)

    routes: dict[str, _Route] = {
        "start": lambda user, answer, _m, _u: conversation.start(user, answer),
        "find_chat": lambda user, answer, _m, update: conversation.find_chat(
            user, answer, update),
        "cancel_find": lambda user, answer, _m, _u: conversation.cancel_find(user, answer),
        "exit_chat": lambda user, answer, _m, _u: conversation.ask_exit(user, answer),
        "next": lambda user, answer, _m, update: conversation.next_chat(user, answer, update),
        "help": lambda user, answer, _m, _u: conversation.help(user, answer),
        "about": lambda user, answer, _m, _u: conversation.about(user, answer),
        "set_language": lambda user, answer, _m, _u: conversation.show_languages(user, answer),
        "delete": lambda user, answer, message, _u: relay.delete(user, message, answer),
        "privacy": lambda user, answer, _m, _u: privacy.policy(user, answer),
        "mydata": lambda user, _a, _m, _u: privacy.my_data(user),
        "deleteme": lambda user, answer, _m, _u: privacy.ask_delete(user, answer),
        "analytics": lambda user, answer, message, _u: privacy.analytics_choice(
            user, (message.text or "").partition(" ")[2], answer),
        "reminders": lambda user, answer, message, _u: privacy.reminders_choice(
            user, (message.text or "").partition(" ")[2], answer),
        "report": lambda user, answer, _m, _u: moderation.ask_report(user, answer),
        "block": lambda user, answer, _m, update: moderation.block(user, answer, update),
    }

    def command_handler(command: str, route: _Route) -> Callable[[types.Message], None]:
        def handle(message: types.Message) -> None:
            ctx, answer = user_and_answer(message)
            user = ctx.require_user()
            analytics.track(user, f"command.{command}")
            done(route(user, answer, message, ctx.update_id))

        return handle

    for command, route in routes.items():
        bot.register_message_handler(command_handler(command, route),
                                     commands=list(COMMANDS[command]), chat_types=PRIVATE)

    @bot.message_handler(commands=list(ADMIN_COMMANDS), chat_types=PRIVATE)
    def admin_command(message: types.Message) -> None:
        # Whole commands from admins only; from anyone else an unknown command, never
        # relayed, so "/ban" cannot be used to probe or to reach a partner.
        ctx, answer = user_and_answer(message)
        user = ctx.require_user()
        command, _, argument = (message.text or "").partition(" ")
        name = command.lstrip("/").split("@")[0]
        if not moderation.is_admin(user.user_id):
            t = catalog.for_user(user)
            answer.send(t("unknown_command"))
            done("unknown_command")
            return
        done(moderation.admin_command(user, name, argument, answer, ctx.update_id))

    @bot.message_handler(chat_types=PRIVATE, content_types=list(RELAYED_CONTENT_TYPES))
    def relay_message(message: types.Message) -> None:
        ctx, answer = user_and_answer(message)
        user = ctx.require_user()
        is_command = message.content_type == "text" and (message.text or "").startswith("/")
        if is_command and user.chat is None:
            t = catalog.for_user(user)
            answer.send(t("unknown_command"), keyboards.idle(t))
            analytics.track(user, "command.unknown")
            done("unknown_command")
            return
        done(relay.relay(user, message, ctx.update_id))

    @bot.message_handler(chat_types=PRIVATE, content_types=ALL_CONTENT_TYPES)
    def unsupported(message: types.Message) -> None:
        ctx, answer = user_and_answer(message)
        user = ctx.require_user()
        t = catalog.for_user(user)
        answer.send(t("relay.unsupported"))
        analytics.track(user, f"message.invalid.{message.content_type}")
        done("unsupported:" + message.content_type)

    @bot.message_handler(chat_types=GROUPS, content_types=ALL_CONTENT_TYPES)
    def group_message(message: types.Message) -> None:
        if message.chat.id == moderation.settings.admin_chat_id:
            done("moderators_chat:ignored")
            return
        leave_group(message.chat.id)

    @bot.edited_message_handler(chat_types=PRIVATE, content_types=list(RELAYED_CONTENT_TYPES))
    def edited(message: types.Message) -> None:
        ctx = context.current()
        done(relay.edit(ctx.require_user(), message))

    @bot.callback_query_handler(func=lambda _query: True)
    def button(query: types.CallbackQuery) -> None:
        ctx = context.current()
        # A query older than about 15 s can no longer be answered; the press still counts.
        with contextlib.suppress(TelegramRejected):
            telegram.answer_callback(query.id)
        message = query.message
        data = str(query.data or "")
        if data.startswith(("mod:ban:", "mod:dismiss:")) and message is not None:
            if moderation.is_admin(query.from_user.id):
                done(moderation.resolve(query.from_user.id, data, message.chat.id,
                                        message.message_id, ctx.update_id))
            else:
                done("mod:not_admin")
            return
        if message is None or message.chat.type != "private" or ctx.user is None:
            done("button:ignored")
            return
        answer = Answer(telegram, message.chat.id, message.message_id)
        done(press(ctx, data, answer))

    def press(ctx: context.UpdateContext, data: str, answer: Answer) -> str:
        user = ctx.require_user()
        update_id = ctx.update_id
        analytics.track(user, "action." + keyboards.action_name(data))
        if data.startswith(keyboards.SET_LANGUAGE):
            return "button:" + conversation.set_language(
                user, data.removeprefix(keyboards.SET_LANGUAGE), answer, update_id)
        if data == keyboards.REPORT_CANCEL:
            answer.send(catalog.for_user(user)("report.cancelled"))
            return "button:report:cancelled"
        if data.startswith(keyboards.REPORT):
            return "button:" + moderation.report(
                user, data.removeprefix(keyboards.REPORT), answer, update_id)
        actions = {
            keyboards.FIND: lambda: conversation.find_chat(user, answer, update_id),
            keyboards.CANCEL_FIND: lambda: conversation.cancel_find(user, answer),
            keyboards.EXIT: lambda: conversation.ask_exit(user, answer),
            keyboards.EXIT_YES: lambda: conversation.exit_chat(user, answer, update_id),
            keyboards.EXIT_NO: lambda: conversation.keep_chat(user, answer),
            keyboards.LANGUAGE: lambda: conversation.show_languages(user, answer),
            keyboards.LANGUAGE_ALL: lambda: conversation.toggle_languages(
                user, answer, show_all=True),
            keyboards.LANGUAGE_TOP: lambda: conversation.toggle_languages(
                user, answer, show_all=False),
            keyboards.HELP: lambda: conversation.help(user, answer),
            keyboards.ABOUT: lambda: conversation.about(user, answer),
            keyboards.SAY_HI: lambda: conversation.say_hi(user, answer, update_id),
            keyboards.ANY_LANGUAGE: lambda: conversation.join_any_language(user, answer, update_id),
            keyboards.AGE_YES: lambda: conversation.answer_age(user, True, answer, update_id),
            keyboards.AGE_NO: lambda: conversation.answer_age(user, False, answer, update_id),
            keyboards.DELETE_YES: lambda: privacy.delete(user, answer, update_id),
            keyboards.DELETE_NO: lambda: privacy.keep(user, answer),
        }
        action = actions.get(data)
        if action is None:
            return "button:unknown"
        return "button:" + action()

    @bot.my_chat_member_handler(func=lambda _update: True)
    def membership(update: types.ChatMemberUpdated) -> None:
        ctx = context.current()
        status = update.new_chat_member.status
        if update.chat.type in GROUPS:
            if update.chat.id == moderation.settings.admin_chat_id:
                done("moderators_chat:" + status)
            elif status in ("member", "administrator"):
                leave_group(update.chat.id)
            else:
                done("group:left")
            return
        if update.chat.type != "private" or ctx.user is None:
            done("membership:ignored")
            return
        if status == "kicked":
            done(conversation.bot_blocked(ctx.user, ctx.update_id))
        elif status == "member":
            done(conversation.bot_unblocked(ctx.user))
        else:
            done("membership:" + status)

    def leave_group(chat_id: int) -> None:
        t = catalog.for_language("en")
        try:
            telegram.send_text(chat_id, t("private_only"))
            telegram.leave_chat(chat_id)
        except (TelegramBlocked, TelegramRejected):
            pass  # already removed from the group, or not allowed to write there
        done("group:left")
