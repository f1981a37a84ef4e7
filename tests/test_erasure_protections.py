"""Erasure keeps other people's protections, through the HTTP entry, on every backend.

A user who was blocked or reported and then ran /deleteme comes back with the same
Telegram id: they still never meet the one who excluded them, while nothing stored names
them (the kept block or report carries a tombstone and a keyed hash, never the id), and
the reporter's /mydata still names one partner per chat.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from messagine.dev.fake_bot_api import FakeUser
from support.served_bot import ServedBot as Bot
from support.served_bot import served_bot

pytestmark = [pytest.mark.slow]

MODERATORS = -100_777_000
VICTIM, OFFENDER, OTHER, ADMIN = 6_100_001, 6_100_002, 6_100_003, 6_100_009
BANNED = "You are banned from Messagine. /privacy, /mydata and /deleteme still work."


@pytest.fixture(params=BACKENDS)
def bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bot]:
    # RECENT_PARTNERS=0: only the kept exclusion can keep the two apart.
    with served_bot(request, request.param, tmp_path, RECENT_PARTNERS="0",
                    ADMIN_CHAT_ID=str(MODERATORS), ADMIN_IDS=str(ADMIN)) as served:
        yield served


def _erase_and_come_back(bot: Bot, victim: FakeUser, offender: FakeUser) -> None:
    """The victim waits; the offender erases their data, returns and searches."""
    bot.send(victim.command("find_chat"))
    bot.send(offender.command("deleteme"))
    bot.send(offender.press_button("Delete everything"))
    assert "Done. Deleted" in offender.last()["text"]
    stored = bot.stored()
    assert OFFENDER not in stored, "the kept protection names the erased user"
    assert not any(isinstance(v, str) and str(OFFENDER) in v for v in stored)
    kept = [e for e in bot.dump()["exclusions"] if e["user_id"] == VICTIM]
    assert len(kept) == 1 and kept[0]["other_id"] < 0, "a tombstone in place of the id"
    assert len(kept[0]["other_key"]) == 64, "and the keyed hash beside it"
    bot.send(offender.command("start"), offender.command("find_chat"))


def _never_meet_again(bot: Bot, victim: FakeUser, offender: FakeUser) -> None:
    """Neither as the one who searches nor as the one who waits; others still meet them."""
    assert bot.partner(offender) is None and bot.partner(victim) is None
    bot.send(victim.command("cancel_find"), victim.command("find_chat"))
    assert bot.partner(offender) is None and bot.partner(victim) is None
    newcomer = bot.api.user(OTHER, "Newcomer")
    bot.send(newcomer.command("find_chat"))
    assert bot.partner(newcomer) == OFFENDER, "the returning user meets everyone else"


def test_a_block_survives_the_blocked_users_erasure(bot: Bot):
    victim, offender = bot.api.user(VICTIM, "Vic"), bot.api.user(OFFENDER, "Off")
    bot.send(victim.command("find_chat"), offender.command("find_chat"))
    assert bot.partner(victim) == OFFENDER
    bot.send(victim.command("block"))
    _erase_and_come_back(bot, victim, offender)
    _never_meet_again(bot, victim, offender)


def test_a_report_survives_the_reported_users_erasure(bot: Bot):
    victim, offender = bot.api.user(VICTIM, "Vic"), bot.api.user(OFFENDER, "Off")
    bot.send(victim.command("find_chat"), offender.command("find_chat"),
             offender.text("spam spam"), victim.command("report"))
    bot.send(victim.press_button("Spam"))
    assert any(str(OFFENDER) in m.get("text", "") for m in bot.api.messages(MODERATORS))
    _erase_and_come_back(bot, victim, offender)
    _never_meet_again(bot, victim, offender)

    (report,) = bot.dump()["reports"]
    assert report["reported_id"] < 0 and len(report["reported_key"]) == 64
    bot.send(victim.command("mydata"))
    data = json.loads(victim.last()["document"]["content"])
    partners = {c["partner"] for c in data["chats"]}
    assert [r["about"] for r in data["reports"]] == [data["chats"][0]["partner"]], \
        "the report names the partner of its chat, not someone else"
    assert {b["user"] for b in data["blocked_users"]} <= partners


def _reported_then_erased(bot: Bot) -> tuple[FakeUser, FakeUser, dict[str, Any]]:
    """The victim reports the offender, who erases their data; the moderators' Ban press."""
    victim, offender = bot.api.user(VICTIM, "Vic"), bot.api.user(OFFENDER, "Off")
    bot.send(victim.command("find_chat"), offender.command("find_chat"),
             offender.text("spam spam"), victim.command("report"))
    bot.send(victim.press_button("Spam"))
    bot.send(offender.command("deleteme"))
    bot.send(offender.press_button("Delete everything"))
    report = bot.api.messages(MODERATORS)[0]
    admin = bot.api.user(ADMIN, "Admin")
    press = {"update_id": bot.api.next_update_id(), "callback_query": {
        "id": "cb-ban", "from": admin.profile, "chat_instance": "1",
        "message": {**report, "chat": {"id": MODERATORS, "type": "supergroup",
                                       "title": "Moderators"}},
        "data": report["reply_markup"]["inline_keyboard"][0][0]["callback_data"]}}
    return victim, offender, press


def _banned(bot: Bot, offender: FakeUser) -> None:
    state = bot.repository.get_user(OFFENDER)
    assert state is not None and state.banned and state.waiting_since is None
    newcomer = bot.api.user(OTHER, "Newcomer")
    bot.send(newcomer.command("find_chat"))
    assert bot.partner(newcomer) is None, "a banned user meets nobody"


def test_a_ban_decided_after_the_reported_users_erasure_holds_when_they_return(bot: Bot):
    _, offender, press = _reported_then_erased(bot)
    bot.send(press)
    assert "deleted their data" in bot.api.messages(MODERATORS)[0]["text"]
    assert offender.id not in bot.stored(), "the ban is kept by the key, not the id"
    bot.send(offender.command("start"), offender.command("find_chat"))
    assert offender.last()["text"] == BANNED
    _banned(bot, offender)


def test_a_ban_decided_while_the_returned_user_waits_takes_them_out(bot: Bot):
    _, offender, press = _reported_then_erased(bot)
    bot.send(offender.command("start"), offender.command("find_chat"))
    assert bot.repository.get_user(OFFENDER).waiting_since is not None
    bot.send(press)
    assert offender.last()["text"] == "You have been banned from Messagine. Reason: spam"
    _banned(bot, offender)


def _chat_then_partner_erased(bot: Bot) -> tuple[FakeUser, FakeUser]:
    """The offender harasses the victim in a chat, then erases their data."""
    victim, offender = bot.api.user(VICTIM, "Vic"), bot.api.user(OFFENDER, "Off")
    bot.send(victim.command("find_chat"), offender.command("find_chat"),
             offender.text("spam spam"))
    assert bot.partner(victim) == OFFENDER
    bot.send(offender.command("deleteme"))
    bot.send(offender.press_button("Delete everything"))
    assert "Done. Deleted" in offender.last()["text"]
    return victim, offender


def _kept_by_key(bot: Bot) -> None:
    (kept,) = [e for e in bot.dump()["exclusions"] if e["user_id"] == VICTIM]
    assert kept["other_id"] < 0 and len(kept["other_key"] or "") == 64, \
        "a block of a tombstone keeps the erased user's key"
    assert OFFENDER not in bot.stored()


def test_a_block_made_after_the_partners_erasure_still_binds_them(bot: Bot):
    victim, offender = _chat_then_partner_erased(bot)
    bot.send(victim.command("block"))
    _kept_by_key(bot)
    bot.send(offender.command("start"), offender.command("find_chat"),
             victim.command("find_chat"))
    _never_meet_again(bot, victim, offender)


def test_a_thumbs_down_on_the_card_after_the_partners_erasure_still_binds_them(bot: Bot):
    victim, offender = _chat_then_partner_erased(bot)
    bot.send(victim.press_button("👎"))
    assert victim.last()["text"].endswith(
        "This person has deleted their data, so there is no one left to rate; you will not "
        "be paired with them again if they come back.")
    _kept_by_key(bot)
    bot.send(offender.command("start"), offender.command("find_chat"),
             victim.command("find_chat"))
    _never_meet_again(bot, victim, offender)


def test_a_thumbs_up_on_the_card_after_the_partners_erasure_says_there_is_no_one_to_rate(
        bot: Bot):
    victim, _ = _chat_then_partner_erased(bot)
    bot.send(victim.press_button("👍"))
    assert victim.last()["text"].endswith(
        "This person has deleted their data, so there is no one left to rate.")
    assert not any(e["user_id"] == VICTIM for e in bot.dump().get("exclusions", [])), \
        "a 👍 keeps nobody apart"
    assert OFFENDER not in bot.stored()


def test_a_report_made_after_the_partners_erasure_binds_and_bans_them(bot: Bot):
    victim, offender = _chat_then_partner_erased(bot)
    bot.send(victim.command("report"))
    bot.send(victim.press_button("Spam"))
    _kept_by_key(bot)
    (report,) = bot.dump()["reports"]
    assert report["reported_id"] < 0 and len(report["reported_key"] or "") == 64
    bot.send(offender.command("start"), offender.command("find_chat"),
             victim.command("find_chat"))
    _never_meet_again(bot, victim, offender)

    card = bot.api.messages(MODERATORS)[0]
    admin = bot.api.user(ADMIN, "Admin")
    bot.send({"update_id": bot.api.next_update_id(), "callback_query": {
        "id": "cb-ban", "from": admin.profile, "chat_instance": "1",
        "message": {**card, "chat": {"id": MODERATORS, "type": "supergroup",
                                     "title": "Moderators"}},
        "data": card["reply_markup"]["inline_keyboard"][0][0]["callback_data"]}})
    assert "Their ban is kept" in bot.api.messages(MODERATORS)[0]["text"]
    bot.send(offender.command("cancel_find"), offender.command("find_chat"))
    assert offender.last()["text"] == BANNED


def test_a_ban_on_a_report_that_kept_no_key_says_so(bot: Bot):
    # A report stored about a tombstone without a key (before keys were kept with chats).
    _chat_then_partner_erased(bot)
    chat = bot.repository.last_chat(VICTIM)
    assert chat is not None
    report = bot.repository.add_report(VICTIM, chat.partner_id, chat.chat_id, "spam", 0.0)
    assert report is not None
    admin = bot.api.user(ADMIN, "Admin")
    bot.send({"update_id": bot.api.next_update_id(), "callback_query": {
        "id": "cb-ban", "from": admin.profile, "chat_instance": "1",
        "message": {"message_id": 1, "date": 0, "text": "report",
                    "chat": {"id": MODERATORS, "type": "supergroup", "title": "Moderators"}},
        "data": f"mod:ban:{report.report_id}"}})
    (told,) = [m["text"] for m in bot.api.messages(MODERATORS) if "deleted their data" in
               m.get("text", "")]
    assert "no ban can follow them" in told and "is kept" not in told
