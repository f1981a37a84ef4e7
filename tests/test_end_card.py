"""The end-of-chat card: who ended it, Next, Report while the window allows, and a 👍/👎
kept only as counts on the rated user, once per chat, with one flag to the moderators.

Through the HTTP entry point on every backend; the report window's end in-process with a
controlled clock.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import BACKENDS, FunctionServer, MakeBot, backend_env, bot_env
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser

MODERATORS = -100_777_000
CARD_BUTTONS = ["👍", "👎", "🚩 Report", "▶️ Next chat"]
PROMPT = "How was it? Rate your partner"
TOO_LATE = "That chat is too far back to rate or report now."


def buttons(message: dict[str, Any]) -> list[str]:
    return [b["text"] for row in message.get("reply_markup", {}).get("inline_keyboard", [])
            for b in row]


def data_of(message: dict[str, Any], label: str) -> str:
    return next(b["callback_data"] for row in message["reply_markup"]["inline_keyboard"]
                for b in row if b["text"] == label)


def shown(user: FakeUser, message_id: int) -> dict[str, Any]:
    """The bot's message ``message_id`` as it shows now (after any edit)."""
    return next(m for m in user.inbox() if m["message_id"] == message_id)


def card_of(user: FakeUser) -> dict[str, Any]:
    return next(m for m in reversed(user.inbox()) if PROMPT in m.get("text", ""))


@pytest.fixture(scope="module", params=BACKENDS)
def served_cards(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[FunctionServer, FakeBotApi]]:
    with FakeBotApi() as api:
        path = tmp_path_factory.mktemp("card") / "server.sqlite3"
        env = {**bot_env(api, path, ADMIN_CHAT_ID=str(MODERATORS), RATING_FLAG_AFTER="2",
                         RECENT_PARTNERS="0"), **backend_env(request, request.param)}
        server = FunctionServer(env)
        yield server, api
        server.stop()


_ids = itertools.count(800_000, 10)
# Each test waits in a language pool of its own, so nobody a test leaves waiting meets the
# next test's users (one server and store per backend: a cycle longer than its tests).
_pools = itertools.cycle(("sw", "nl", "it", "pl", "sv", "fi", "da", "no", "cs", "hu"))


@pytest.fixture
def people(served_cards: tuple[FunctionServer, FakeBotApi]
           ) -> tuple[FunctionServer, FakeBotApi, list[FakeUser]]:
    """Four new users for each test, in a language pool of the test's own."""
    server, api = served_cards
    base, pool = next(_ids), next(_pools)
    return server, api, [api.user(base + i, name, language_code=pool) for i, name in
                         enumerate(("Alice", "Bob", "Carol", "Dave"))]


def pair(server: FunctionServer, a: FakeUser, b: FakeUser) -> None:
    assert server.post(a.command("find_chat")).status_code == 200
    assert server.post(b.command("find_chat")).status_code == 200
    assert b.last()["text"].startswith("Chat started")


def mydata(server: FunctionServer, user: FakeUser) -> dict[str, Any]:
    server.post(user.command("mydata"))
    return dict(json.loads(user.last()["document"]["content"]))


def counts(data: dict[str, Any]) -> tuple[int, int]:
    """The 👍 and 👎 counts a /mydata export shows."""
    return data["ratings"]["thumbs_up"], data["ratings"]["thumbs_down"]


def test_both_sides_get_the_card_saying_who_ended_it(people):
    server, _, (alice, bob, carol, dave) = people
    pair(server, alice, bob)
    server.post(alice.command("exit_chat"))
    server.post(alice.press_button("Yes"))
    assert alice.last()["text"].startswith("You have closed the chat.\n")
    assert bob.last()["text"].startswith("Chat closed by your partner.\n")
    for user in (alice, bob):
        assert PROMPT in user.last()["text"] and buttons(user.last()) == CARD_BUTTONS

    # /next: a card for the chat that ended, then the search, as two messages.
    pair(server, carol, dave)
    server.post(carol.command("next"))
    ended, searching = carol.inbox()[-2:]
    assert ended["text"].startswith("You have closed the chat.\n") and \
        buttons(ended) == CARD_BUTTONS
    assert searching["text"].startswith("Searching for someone")
    assert dave.last()["text"].startswith("Chat closed by your partner.\n")


def test_a_rating_counts_once_shows_only_as_counts_and_keeps_the_pair_apart(people):
    server, _, (alice, bob, _carol, _dave) = people
    pair(server, alice, bob)
    server.post(alice.command("next"))
    card = card_of(bob)
    down = bob.press(card["message_id"], data_of(card, "👎"))
    assert server.post(down).status_code == 200
    assert server.post(down).status_code == 200  # Telegram delivers it again
    assert "your 👎 is counted" in bob.last()["text"]
    assert buttons(bob.last()) == ["🚩 Report", "▶️ Next chat"], "no second rating offered"
    # A stale client presses the old 👍 of the same card: nothing more is counted.
    server.post(bob.press(card["message_id"], data_of(card, "👍")))
    assert "rated this chat already" in bob.last()["text"]

    alice_data = mydata(server, alice)
    assert counts(alice_data) == (0, 1)
    assert str(bob.id) not in json.dumps(alice_data) and "Bob" not in json.dumps(alice_data)
    assert counts(mydata(server, bob)) == (0, 0)

    # The 👎 keeps them apart (recent partners are off in this module).
    server.post(bob.command("cancel_find"))
    server.post(alice.command("cancel_find"))
    server.post(alice.command("find_chat"))
    server.post(bob.command("find_chat"))
    assert bob.last()["text"].startswith("Searching for someone")


def test_a_thumbs_up_counts_and_many_thumbs_down_flag_the_user_once(
        people, served_cards: tuple[FunctionServer, FakeBotApi]):
    server, api, (alice, bob, carol, dave) = people
    flags_before = [m for m in api.messages(MODERATORS) if str(alice.id) in m.get("text", "")]
    for rater, value in ((bob, "👍"), (carol, "👎"), (dave, "👎")):
        pair(server, alice, rater)
        server.post(rater.command("exit_chat"))
        server.post(rater.press_button("Yes"))
        server.post(rater.press(card_of(rater)["message_id"], data_of(card_of(rater), value)))
        if rater is carol:
            assert not [m for m in api.messages(MODERATORS)
                        if str(alice.id) in m.get("text", "")], "one 👎 is no flag"
        server.post(alice.command("cancel_find"))
    flags = [m for m in api.messages(MODERATORS) if str(alice.id) in m.get("text", "")]
    assert flags_before == [] and len(flags) == 1
    assert flags[0]["text"].startswith(f"⚠️ User {alice.id} has been rated 👎 by 2 different")
    for rater in (bob, carol, dave):
        assert str(rater.id) not in flags[0]["text"], "nobody sees who rated"
    assert counts(mydata(server, alice)) == (1, 2)
    told = mydata(server, alice)["ratings"]
    assert told["moderators_told"] is True and len(told["counted_at"]) == 3


def test_a_card_rates_and_reports_its_own_chat_even_from_the_next_one(people):
    server, api, (alice, bob, carol, _dave) = people
    pair(server, alice, bob)
    server.post(alice.command("next"))  # Bob has a card
    server.post(alice.command("cancel_find"))
    old = card_of(bob)
    pair(server, carol, bob)  # /next pairs at once: Bob is in his next chat

    server.post(bob.press(old["message_id"], data_of(old, "👎")))
    # The old card is not the newest message: the answer comes at the bottom, and the
    # card's buttons retire.
    assert "your 👎 is counted" in bob.last()["text"]
    assert buttons(shown(bob, old["message_id"])) == []
    assert counts(mydata(server, alice)) == (0, 1)
    assert counts(mydata(server, carol)) == (0, 0)

    server.post(bob.press(old["message_id"], data_of(old, "🚩 Report")))
    assert "Spam" in " ".join(buttons(bob.last()))
    reports_before = len(api.messages(MODERATORS))
    server.post(bob.press_button("Spam"))
    report = api.messages(MODERATORS)[reports_before]
    assert str(alice.id) in report["text"] and str(carol.id) not in report["text"]
    assert buttons(bob.last())[0] == "🚪 Exit Chat", "the keyboard of the chat with Carol"
    server.post(bob.text("still here, Carol"))
    assert carol.last().get("text") == "still here, Carol", "the chat with Carol goes on"


def test_bad_rating_data_gets_an_answer_not_a_crash(people):
    server, _, (alice, bob, _carol, _dave) = people
    pair(server, alice, bob)
    server.post(alice.command("next"))
    card = card_of(bob)
    for data in ("rate=", "rate=sideways:1", "rate=up:", "rate=up:abc", "report=x",
                 "rate=up:" + "9" * 40):
        assert server.post(bob.press(card["message_id"], data)).status_code == 200
        assert bob.last()["text"] == TOO_LATE


@pytest.fixture
def windowed(make_bot: MakeBot):  # type: ignore[no-untyped-def]
    return make_bot(REPORT_WINDOW_MINUTES="1")


def test_the_card_rates_and_reports_only_within_the_report_window(
        windowed, fake_api: FakeBotApi, clock):  # type: ignore[no-untyped-def]
    process = windowed.pipeline.process
    alice, bob = fake_api.user(71, "Alice"), fake_api.user(72, "Bob")
    process(alice.command("find_chat"))
    process(bob.command("find_chat"))
    process(alice.command("next"))
    card = card_of(bob)
    clock.advance(61)
    assert process(bob.press(card["message_id"], data_of(card, "👍"))).outcome == \
        "button:rate:too_late"
    assert process(bob.press(card["message_id"], data_of(card, "🚩 Report"))).outcome == \
        "button:report:too_late"
    process(alice.command("cancel_find"))
    process(alice.command("mydata"))
    data = json.loads(alice.last()["document"]["content"])
    assert counts(data) == (0, 0)
