"""The route table: every command and button of the bot, declared once.

A route names one thing a user can ask for, by typing a command, by pressing a button, or
both, and the service call that answers it. Everything else is derived from this table:
the pyTelegramBotAPI handlers (messagine.handlers), the command menus (``set-commands`` and
the sandbox), the callback data that keyboards put on buttons, the list of requests that a
banned user may still make (their privacy rights), and the analytics event names
(``command.<route>`` and ``action.<route>``).

Commands match whatever their case and with or without an ``@botname`` suffix, so
``/NEXT`` and ``/Report@messagine_bot`` run as commands and are never copied to a partner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from telebot import types

    from messagine.answer import Answer
    from messagine.conversation import Conversation
    from messagine.models import UserState
    from messagine.moderation import Moderation
    from messagine.privacy import Privacy
    from messagine.reactions import Reactions
    from messagine.relay import Relay


@dataclass(frozen=True, slots=True)
class Services:
    """The services a route's action may call."""

    conversation: Conversation
    relay: Relay
    privacy: Privacy
    moderation: Moderation
    reactions: Reactions


@dataclass(frozen=True, slots=True)
class Call:
    """One request to a route: who asked, where to answer, and what came with it.

    ``argument`` is the text after a command, or the callback data after a button's
    prefix; ``message`` is the command's message (None for a button press).
    """

    services: Services
    user: UserState
    answer: Answer
    update_id: int
    argument: str = ""
    message: types.Message | None = None


Action = Callable[[Call], str]
"""A route's service call; returns the outcome that the update's log line records."""


@dataclass(frozen=True, slots=True)
class Route:
    """One command and/or button.

    ``commands``: the command and its aliases (the first is the one the menu shows);
    ``button``: the callback data of its button (a prefix when ``prefix`` is set, the rest
    of the data being the call's argument); ``menu``: listed in the command menu;
    ``while_banned``: still answered for a banned user (privacy rights); ``admin_only``:
    answered for admins, an unknown command for everyone else; ``resumes``: a button whose
    action may run again for the same update (it resumes by update id, or repeats its
    change), so a press whose first attempt died half way is carried out on re-delivery.
    Every command is run again that way; a button without it is taken as done.
    """

    name: str
    action: Action
    commands: tuple[str, ...] = ()
    button: str | None = None
    prefix: bool = False
    menu: bool = False
    while_banned: bool = False
    admin_only: bool = False
    resumes: bool = False


def _s(call: Call) -> Services:
    return call.services


def _admin_command(name: str) -> Action:
    return lambda c: _s(c).moderation.admin_command(c.user, name, c.argument, c.answer,
                                                    c.update_id)


# The order of the commands with ``menu=True`` is the order of the command menu.
ROUTES: tuple[Route, ...] = (
    Route("find_chat", lambda c: _s(c).conversation.find_chat(c.user, c.answer, c.update_id),
          commands=("find_chat", "find", "search"), button="find", menu=True, resumes=True),
    Route("next", lambda c: _s(c).conversation.next_chat(c.user, c.answer, c.update_id),
          commands=("next",), menu=True),
    Route("exit_chat", lambda c: _s(c).conversation.ask_exit(c.user, c.answer),
          commands=("exit_chat", "stop", "end"), button="exit", menu=True),
    Route("set_language", lambda c: _s(c).conversation.show_languages(c.user, c.answer),
          commands=("set_language", "language"), button="lang", menu=True),
    Route("cancel_find", lambda c: _s(c).conversation.cancel_find(c.user, c.answer),
          commands=("cancel_find", "cancel"), button="cancel_find", menu=True),
    Route("report", lambda c: _s(c).moderation.ask_report(c.user, c.answer),
          commands=("report",), menu=True),
    Route("block", lambda c: _s(c).moderation.block(c.user, c.answer, c.update_id),
          commands=("block",), menu=True),
    Route("help", lambda c: _s(c).conversation.help(c.user, c.answer),
          commands=("help",), button="help", menu=True),
    Route("about", lambda c: _s(c).conversation.about(c.user, c.answer),
          commands=("about",), button="about", menu=True),
    Route("reminders", lambda c: _s(c).privacy.reminders_choice(c.user, c.argument, c.answer),
          commands=("reminders",), menu=True),
    Route("privacy", lambda c: _s(c).privacy.policy(c.user, c.answer),
          commands=("privacy",), menu=True, while_banned=True),
    Route("mydata", lambda c: _s(c).privacy.my_data(c.user),
          commands=("mydata",), menu=True, while_banned=True),
    Route("deleteme", lambda c: _s(c).privacy.ask_delete(c.user, c.answer),
          commands=("deleteme",), menu=True, while_banned=True),
    Route("start", lambda c: _s(c).conversation.start(c.user, c.answer), commands=("start",)),
    Route("delete", lambda c: _s(c).relay.delete(c.user, _message(c), c.answer),
          commands=("delete",)),
    Route("analytics", lambda c: _s(c).privacy.analytics_choice(c.user, c.argument, c.answer),
          commands=("analytics",)),
    # Buttons only.
    Route("exit_yes", lambda c: _s(c).conversation.exit_chat(c.user, c.answer, c.update_id),
          button="exit:yes", resumes=True),
    Route("exit_no", lambda c: _s(c).conversation.keep_chat(c.user, c.answer),
          button="exit:no"),
    Route("language_all", lambda c: _s(c).conversation.toggle_languages(
        c.user, c.answer, show_all=True), button="lang:all"),
    Route("language_top", lambda c: _s(c).conversation.toggle_languages(
        c.user, c.answer, show_all=False), button="lang:top"),
    Route("choose_language", lambda c: _s(c).conversation.set_language(
        c.user, c.argument, c.answer, c.update_id), button="lang=", prefix=True),
    Route("share_send", lambda c: _s(c).relay.confirm_share(
        c.user, c.argument, c.answer, c.update_id), button="share=", prefix=True),
    Route("share_cancel", lambda c: _s(c).relay.cancel_share(c.user, c.answer),
          button="share:no"),
    Route("say_hi", lambda c: _s(c).conversation.say_hi(c.user, c.answer, c.update_id),
          button="hi"),
    Route("any_language", lambda c: _s(c).conversation.join_any_language(
        c.user, c.answer, c.update_id), button="anylang"),
    Route("age_yes", lambda c: _s(c).conversation.confirm_age(c.user, c.answer, c.update_id),
          button="age:yes", resumes=True),
    Route("age_no", lambda c: _s(c).privacy.refuse_age(c.user, c.answer, c.update_id),
          button="age:no", resumes=True),
    Route("deleteme_yes", lambda c: _s(c).privacy.delete(c.user, c.answer, c.update_id),
          button="deleteme:yes", while_banned=True, resumes=True),
    Route("deleteme_no", lambda c: _s(c).privacy.keep(c.user, c.answer),
          button="deleteme:no", while_banned=True),
    Route("rate", lambda c: _s(c).moderation.rate(c.user, c.argument, c.answer),
          button="rate=", prefix=True, resumes=True),
    Route("report_chat", lambda c: _s(c).moderation.ask_report(c.user, c.answer, c.argument),
          button="report=", prefix=True),
    Route("report_cancel", lambda c: _s(c).moderation.cancel_report(c.user, c.answer),
          button="report:cancel"),
    Route("report_reason", lambda c: _s(c).moderation.report(
        c.user, c.argument, c.answer, c.update_id), button="report:", prefix=True, resumes=True),
    # Admins only: an unknown command for everyone else, so they cannot be used to probe
    # the bot or to reach a partner.
    *(Route(name, _admin_command(name), commands=(name,), admin_only=True)
      for name in ("ban", "unban", "detail", "stats")),
)
"""Every command and button route, in menu order first."""

MOD_BAN = "mod:ban:"
MOD_DISMISS = "mod:dismiss:"
MODERATOR_BUTTONS = (MOD_BAN, MOD_DISMISS)
"""Prefixes of the buttons under a report in the moderators' group (not a private chat,
so not routes: their press is answered by ``Moderation.resolve``)."""


def _message(call: Call) -> types.Message:
    if call.message is None:
        raise LookupError(f"route needs the command's message (update {call.update_id})")
    return call.message


_BY_COMMAND = {command: route for route in ROUTES for command in route.commands}
_BY_BUTTON = {route.button: route for route in ROUTES
              if route.button is not None and not route.prefix}
_BY_PREFIX = sorted(((route.button, route) for route in ROUTES
                     if route.button is not None and route.prefix),
                    key=lambda item: -len(item[0]))


def button(name: str) -> str:
    """The callback data of route ``name``'s button (its prefix, for a prefix button)."""
    for route in ROUTES:
        if route.name == name and route.button is not None:
            return route.button
    raise KeyError(f"route {name!r} has no button")


def parse_command(text: str | None) -> tuple[str, str] | None:
    """(command, argument) of a command text, the command lower-cased and without @botname.

    None when ``text`` is not a command ("/" followed by at least one character).
    """
    if not text or not text.startswith("/"):
        return None
    head, *rest = text.split(maxsplit=1)
    command = head[1:].split("@", 1)[0].lower()
    if not command:
        return None
    return command, rest[0].strip() if rest else ""


def command_route(text: str | None) -> tuple[Route, str] | None:
    """The route of a known command and its argument; None for text or an unknown command."""
    parsed = parse_command(text)
    if parsed is None:
        return None
    route = _BY_COMMAND.get(parsed[0])
    return None if route is None else (route, parsed[1])


def button_route(data: str) -> tuple[Route, str] | None:
    """The route of a button's callback data and its argument; None if no route has it."""
    route = _BY_BUTTON.get(data)
    if route is not None:
        return route, ""
    for prefix, prefixed in _BY_PREFIX:
        if data.startswith(prefix):
            return prefixed, data.removeprefix(prefix)
    return None


def menu(texts: Callable[[str], str]) -> list[tuple[str, str]]:
    """The command menu, in its order: (command, description from ``texts``) pairs."""
    return [(route.commands[0], texts(f"cmd.{route.name}")) for route in ROUTES if route.menu]


def allowed_while_banned(command_text: str | None, button_data: str | None) -> bool:
    """Whether a banned user's command or button press is still answered (privacy rights)."""
    found = (command_route(command_text) if command_text is not None
             else button_route(button_data or ""))
    return found is not None and found[0].while_banned
