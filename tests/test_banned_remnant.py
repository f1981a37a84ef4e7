"""A banned user's later updates store nothing, through the HTTP entry, on every backend.

After /deleteme a banned user's record is the banned remnant (``domain.erasure``); their
messages and commands afterwards are answered but leave it as it is: no name, username,
language or time comes back, on any table or collection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from support.raw_store import values
from support.served_bot import ServedBot, served_bot

pytestmark = [pytest.mark.slow]

ADMIN, BANNED, PARTNER = 6_300_001, 6_300_002, 6_300_003
TRACES = ("Mallory", "mallory_u", "Malloy", "nl-BE")


@pytest.fixture(params=BACKENDS)
def bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServedBot]:
    with served_bot(request, request.param, tmp_path, ADMIN_IDS=str(ADMIN)) as served:
        yield served


def _records_naming(bot: ServedBot, user_id: int) -> list[tuple[str, Any]]:
    """Every record of the store in which ``user_id`` appears."""
    return [(name, record) for name, records in bot.dump().items() for record in records
            if user_id in values({name: [record]})]


def test_a_banned_users_later_updates_leave_only_the_remnant(bot: ServedBot):
    banned = bot.api.user(BANNED, "Mallory", username="mallory_u", last_name="Malloy",
                          language_code="nl-BE")
    partner = bot.api.user(PARTNER, "Pat")
    bot.send(banned.command("find_chat"), partner.command("find_chat"), banned.text("spam"),
             bot.api.user(ADMIN, "Admin").command(f"ban {BANNED} spam"))
    bot.send(banned.command("deleteme"))
    bot.send(banned.press_button("Delete everything"))
    remnant = _records_naming(bot, BANNED)
    assert [name for name, _ in remnant] == ["users"], remnant
    assert not set(TRACES) & set(bot.stored())

    bot.send(banned.text("let me back in"), banned.command("start"), banned.command("help"),
             banned.command("find_chat"), banned.media("photo", caption="hi"),
             banned.command("mydata"))
    assert any("banned" in t.lower() for t in banned.texts())
    assert _records_naming(bot, BANNED) == remnant, "the remnant is all that is stored"
    assert not set(TRACES) & set(bot.stored())
