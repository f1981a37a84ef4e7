"""One report per reporter and chat, through the HTTP entry point, on every backend.

Pressing a reason button again (the same prompt, or an older one still on screen) or
Telegram re-delivering the press stores no second report and posts nothing more to the
moderators' chat; the reporter is told the report was already sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BACKENDS
from support.served_bot import ServedBot, served_bot

pytestmark = [pytest.mark.slow]

MODERATORS = -100_888_000
REPORTER, REPORTED = 6_200_001, 6_200_002
ALREADY = ("You have already reported this chat: the moderators have your report. "
           "Nothing more was sent.")


@pytest.fixture(params=BACKENDS)
def bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServedBot]:
    with served_bot(request, request.param, tmp_path, ADMIN_CHAT_ID=str(MODERATORS)) as served:
        yield served


def test_a_chat_is_reported_once_however_often_the_button_is_pressed(bot: ServedBot):
    reporter, reported = bot.api.user(REPORTER, "Rep"), bot.api.user(REPORTED, "Red")
    bot.send(reporter.command("find_chat"), reported.command("find_chat"),
             reported.text("rude words"), reporter.command("report"))
    first_prompt = reporter.press_button("Spam")
    bot.send(reporter.command("report"))  # a second prompt, while the first is on screen
    bot.send(first_prompt)
    posted = len(bot.api.messages(MODERATORS))
    assert posted >= 1
    assert any("moderators will look at it" in t for t in reporter.texts())

    bot.send(reporter.press_button("Abuse"))  # the newer prompt, after the report
    assert list(reporter.texts()).count(ALREADY) == 1
    bot.send(first_prompt | {"update_id": first_prompt["update_id"] + 10_000})  # stale button
    assert list(reporter.texts()).count(ALREADY) == 2
    bot.send(first_prompt)  # Telegram delivers the first press again
    assert len(bot.api.messages(MODERATORS)) == posted, "nothing more for the moderators"
    reports = bot.dump()["reports"]
    assert len(reports) == 1 and reports[0]["reason"] == "spam"
