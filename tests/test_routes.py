"""The route table: commands and buttons declared once, and everything derived from it.

Unit tests on the parser and the table; then the bot in this process (SQLite, the fake
Bot API over HTTP) proves that the handlers, the menus and the privacy allow-list all
answer from the same table; then the real HTTP entry point on every backend proves that a
command typed in capitals or with @botname runs and is never copied to the partner.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import BACKENDS, Deliver, FunctionServer
from messagine import keyboards, routes
from messagine.catalog import Catalog
from messagine.cli import set_commands
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.dev.sandbox import create_app
from messagine.runtime import Runtime

# -- the parser and the table ------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("/next", ("next", "")),
    ("/NEXT", ("next", "")),
    ("/Exit_Chat", ("exit_chat", "")),
    ("/Report@messagine_bot", ("report", "")),
    ("/analytics@SomeBot OFF", ("analytics", "OFF")),
    ("/reminders   on  ", ("reminders", "on")),
    ("/next\nhello there", ("next", "hello there")),
    ("/", None), ("/@bot", None), ("", None), (None, None), ("next", None), (" /next", None),
])
def test_commands_are_parsed_whatever_their_case_and_suffix(
        text: str | None, expected: tuple[str, str] | None):
    assert routes.parse_command(text) == expected


@given(st.sampled_from([c for r in routes.ROUTES for c in r.commands]),
       st.sampled_from(["", "@messagine_bot", "@X"]),
       st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_every_command_in_any_case_finds_its_route(command: str, suffix: str, tail: str):
    mixed = "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(command))
    found = routes.command_route(f"/{mixed}{suffix} {tail}")
    assert found is not None
    assert command in found[0].commands
    assert found[1] == tail.strip()


def test_names_commands_and_buttons_are_unique():
    names = [r.name for r in routes.ROUTES]
    commands = [c for r in routes.ROUTES for c in r.commands]
    buttons = [r.button for r in routes.ROUTES if r.button is not None]
    assert len(names) == len(set(names))
    assert len(commands) == len(set(commands))
    assert len(buttons) == len(set(buttons))
    assert all(c == c.lower() for c in commands)
    # Telegram refuses callback data over 64 bytes: every fixed button and every prefix
    # with the longest argument a keyboard puts behind it stays within.
    assert all(len((b + "zh-hans").encode()) <= 64 for b in buttons)


def test_every_button_on_a_keyboard_has_a_route():
    t = Catalog().for_language("en")
    from messagine.models import UserState

    user = UserState(1, "en", False, False, False, None, None)
    boards = [keyboards.welcome_new(t), keyboards.idle(t), keyboards.lobby(t),
              keyboards.in_chat(t), keyboards.chat_started(t), keyboards.after_hi(t),
              keyboards.confirm_exit(t), keyboards.help_menu(t, user),
              keyboards.language_picker(t, "en", show_all=True),
              keyboards.language_picker(t, "en", show_all=False), keyboards.age_question(t, 16),
              keyboards.confirm_delete(t), keyboards.report_reasons(t),
              keyboards.any_language_offer(t)]
    data = [d for board in boards for row in board for _label, d in row]
    assert data and all(routes.button_route(d) is not None for d in data), data
    assert all(d.startswith(routes.MODERATOR_BUTTONS)
               for row in keyboards.moderation(t, 7) for _l, d in row)


def test_the_privacy_allow_list_is_the_table():
    allowed = {r.name for r in routes.ROUTES if r.while_banned}
    assert allowed == {"privacy", "mydata", "deleteme", "deleteme_yes", "deleteme_no"}
    for route in routes.ROUTES:
        for command in route.commands:
            assert routes.allowed_while_banned(f"/{command.upper()}", None) == route.while_banned
        if route.button is not None:
            assert routes.allowed_while_banned(None, route.button) == route.while_banned
    assert not routes.allowed_while_banned("hello", None)
    assert not routes.allowed_while_banned(None, "no-such-button")


# -- derived: handlers, menus, allow-list -----------------------------------------------


def test_the_menu_is_the_tables_menu_everywhere(bot: Runtime, fake_api: FakeBotApi):
    assert set_commands(bot) == 0
    expected = [r.commands[0] for r in routes.ROUTES if r.menu]
    for call in fake_api.calls_of("setMyCommands"):
        assert [c["command"] for c in call.params["commands"]] == expected
    app = create_app(object())  # /api/commands needs no sandbox behind it
    sandbox_menu = app.test_client().get("/api/commands").get_json()["commands"]
    assert [c["command"] for c in sandbox_menu] == expected
    assert all(c["description"] for c in sandbox_menu)


def _in_chat(deliver: Deliver, a: FakeUser, b: FakeUser) -> None:
    assert deliver(a.command("find_chat")).outcome == "find:waiting"
    assert deliver(b.command("FIND_CHAT")).outcome == "find:matched"


def test_every_command_of_the_table_is_handled_and_never_relayed(
        deliver: Deliver, fake_api: FakeBotApi):
    alice, bob = fake_api.user(101, "Alice"), fake_api.user(102, "Bob")
    for route in routes.ROUTES:
        for command in route.commands:
            if route.name in ("deleteme", "next", "exit_chat", "report", "block",
                              "find_chat", "cancel_find"):
                continue  # these change the chat: checked one by one below
            _ensure_chat(deliver, fake_api, alice, bob)
            copies_before = len(fake_api.calls_of("copyMessage"))
            outcome = deliver(alice.command(command.upper() + "@messagine_bot")).outcome
            assert not outcome.startswith("relay"), (command, outcome)
            assert len(fake_api.calls_of("copyMessage")) == copies_before, command
            if route.admin_only:
                assert outcome == "unknown_command"


def _ensure_chat(deliver: Deliver, fake_api: FakeBotApi, a: FakeUser, b: FakeUser) -> None:
    if not any("Chat started" in t for t in a.texts()):
        _in_chat(deliver, a, b)


@pytest.mark.parametrize(("typed", "outcome"), [
    ("NEXT", "next:ended+waiting"), ("Exit_Chat", "exit:asked"), ("REPORT@bot", "report:asked"),
    ("Block", "block:"), ("Cancel_Find", "cancel_find:"), ("DELETEME", "deleteme:asked"),
])
def test_capitalised_commands_in_a_chat_run(deliver: Deliver, fake_api: FakeBotApi,
                                            typed: str, outcome: str):
    alice, bob = fake_api.user(101, "Alice"), fake_api.user(102, "Bob")
    _in_chat(deliver, alice, bob)
    result = deliver(alice.command(typed)).outcome
    assert result.startswith(outcome), result
    assert fake_api.calls_of("copyMessage") == []
    assert not any(t.startswith("/") for t in bob.texts())


def test_a_banned_user_keeps_exactly_the_privacy_routes(bot: Runtime, deliver: Deliver,
                                                        fake_api: FakeBotApi):
    mallory = fake_api.user(666, "Mallory")
    deliver(mallory.command("start"))
    assert bot.repository.set_banned(666, True)
    for route in routes.ROUTES:
        for command in route.commands:
            outcome = deliver(mallory.command(command.title())).outcome
            assert (outcome != "banned") == route.while_banned, (command, outcome)
    for data, allowed in (("deleteme:no", True), ("find", False), ("hi", False)):
        answered = len(fake_api.calls_of("answerCallbackQuery"))
        press = mallory.press(mallory.last()["message_id"], data)
        outcome = deliver(press).outcome
        assert (outcome != "banned") == allowed, (data, outcome)
        # Every press is answered, also one that stops before its handler.
        assert len(fake_api.calls_of("answerCallbackQuery")) == answered + 1
        assert deliver(press).outcome == "duplicate"
        assert len(fake_api.calls_of("answerCallbackQuery")) == answered + 2


def test_every_button_press_reaches_its_route(bot: Runtime, deliver: Deliver,
                                              fake_api: FakeBotApi):
    alice = fake_api.user(101, "Alice")
    deliver(alice.command("start"))
    message_id = alice.last()["message_id"]
    for route in routes.ROUTES:
        if route.button is None or route.name in ("deleteme_yes", "exit_yes"):
            continue
        data = route.button + ("de" if route.name == "choose_language" else
                               "spam" if route.name == "report_reason" else "")
        outcome = deliver(alice.press(message_id, data)).outcome
        assert outcome.startswith("button:") and outcome != "button:unknown", (data, outcome)
    assert deliver(alice.press(message_id, "no-such-button")).outcome == "button:unknown"


# -- through the real HTTP entry point, on every backend ---------------------------------

pytest_http = pytest.mark.parametrize("served", BACKENDS, indirect=True)


@pytest.mark.slow
@pytest_http
def test_capitalised_commands_over_http_are_never_copied(
        function_server: FunctionServer, served_api: FakeBotApi):
    base = 9_000_000 + len(served_api.calls) * 10
    alice, bob = served_api.user(base + 1, "Alice"), served_api.user(base + 2, "Bob")
    for user in (alice, bob):
        assert function_server.post(user.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in bob.texts())
    for typed in ("Report@messagine_bot", "HELP", "About@X"):
        assert function_server.post(alice.command(typed)).status_code == 200
    assert function_server.post(alice.command("NEXT")).status_code == 200
    assert served_api.calls_of("copyMessage") == []
    assert not [t for t in bob.texts() if t.startswith("/")]
    assert any("closed" in t for t in bob.texts())
