"""/mydata is everything stored under the user: a contract on every backend.

A user goes through everything the bot stores (chats ended and lasting, messages both
ways, reports by and about them, exclusions by and of them, a rating, flood counters, the reminder
state and time, the any-language offer, the update ids of their chats); then every record
of every table or collection that names them, read from the database itself
(``support.raw_store``), must be in their /mydata export. Each field of such a record is
known below by what it is: shown as stored (times in ISO 8601), the user themself, another
person (a label, never the id), a chat (a label), or derived from another field. A field
or table that is not known fails the test, so nothing new can be stored unexported.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import BACKENDS
from support.raw_store import values
from support.served_bot import ServedBot, served_bot

pytestmark = [pytest.mark.slow]

ME, FIRST, SECOND, THIRD = 8_500_000_001, 8_500_000_002, 8_500_000_003, 8_500_000_004
OTHERS = (FIRST, SECOND, THIRD)

SAME, SELF, PERSON, CHAT, REPORT_ID = "same", "self", "person", "chat", "report id"
DERIVED = "derived"
"""Computed from another field of the record (an expiry from a time, a document id from
the fields it joins, a copy of the active chat)."""
KEPT = "kept"
"""Set only on what erasure keeps for others' safety, once the user it names erased their
data (``messagine.domain.erasure``): there is then no user to export it to."""

TABLES = {"users": "users", "lobby": "lobby", "chats": "chats", "memberships": "memberships",
          "exclusions": "exclusions", "message_links": "links", "links": "links",
          "reports": "reports", "albums": "albums"}
"""Each table (SQLite) or collection (MongoDB, Firestore) that may hold a user's records."""

FIELDS: dict[str, dict[str, str]] = {
    "users": {"id": SELF, "_id": SELF, "first_name": SAME, "last_name": SAME,
              "username": SAME, "language_code": SAME, "language": SAME, "first_seen": SAME,
              "last_seen": SAME, "blocked": SAME, "banned": SAME, "analytics_opt_out": SAME,
              "age_answer": SAME, "age_answered_at": SAME, "reminders_off": SAME,
              "nudge_pending": SAME, "reminded_at": SAME, "flood": SAME,
              "notice_pending": SAME, "noticed_at": SAME, "ratings": SAME,
              "newest_message": SAME,
              "recent_updates": SAME, "claims": SAME, "waiting_since": SAME,
              "chat": DERIVED},
    "lobby": {"user_id": SELF, "_id": SELF, "language": SAME, "since": SAME, "offered": SAME,
              "avoid": PERSON},
    "chats": {"id": CHAT, "_id": CHAT, "user_a": PERSON, "user_b": PERSON, "users": PERSON,
              "ended_by": PERSON, "language": SAME, "started_at": SAME,
              "opened_by_update": SAME, "ended_at": SAME, "end_reason": SAME,
              "closed_by_update": SAME, "expires_at": DERIVED, "erased_key": KEPT},
    "memberships": {"user_id": SELF, "chat_id": CHAT, "partner_id": PERSON},
    "exclusions": {"_id": DERIVED, "user_id": PERSON, "other_id": PERSON, "reason": SAME,
                   "created_at": SAME, "other_key": KEPT},
    "links": {"_id": DERIVED, "chat_id": CHAT, "sender_id": PERSON, "recipient_id": PERSON,
              "sender_message_id": SAME, "copy_message_id": SAME, "content_type": SAME,
              "sent_at": SAME, "expires_at": DERIVED, "role": DERIVED},
    "reports": {"id": REPORT_ID, "_id": REPORT_ID, "reporter_id": PERSON,
                "reported_id": PERSON, "chat_id": CHAT, "reason": SAME, "created_at": SAME,
                "status": SAME, "reported_key": KEPT, "ban_on_return": KEPT},
    "albums": {"key": DERIVED, "_id": DERIVED, "chat_id": CHAT, "sender_id": SELF,
               "version": SAME, "batches": SAME, "expires_at": DERIVED},
}


@pytest.fixture(params=BACKENDS)
def bot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServedBot]:
    with served_bot(request, request.param, tmp_path, ADMIN_CHAT_ID="-100999") as served:
        yield served


def _live_everything(bot: ServedBot) -> None:
    """Everything the bot stores about ME, and some about the others."""
    me = bot.api.user(ME, "Mia", username="mia_u", last_name="Moss")
    first, second, third = (bot.api.user(i, n) for i, n in zip(OTHERS, ("Fay", "Sid", "Tom"),
                                                                strict=True))
    bot.send(me.command("start"), me.command("analytics off"), me.command("find_chat"),
             first.command("find_chat"), me.text("hello first"), first.text("hi me"),
             me.media("photo", caption="a photo"), *me.album("photo", 2))
    _until(lambda: bot.api.calls_of("copyMessages", FIRST))  # the album sent: it stays
    bot.send(second.command("find_chat"),
             me.command("next"), me.text("hello second"), second.text("spam from me?"),
             second.command("report"))
    bot.send(second.press_button("Spam"))  # a report about ME, and their exclusion of ME
    bot.send(first.press_button("👍"))  # a rating of ME, kept as counts with ME
    bot.send(me.command("find_chat"), third.command("find_chat"), third.text("rude"),
             me.command("block"), me.command("report"))
    bot.send(me.press_button("Abuse"))  # a report by ME (the block came first)
    bot.send(me.command("find_chat"))  # waiting in the lobby
    bot.repository.claim_language_offers(time.time() + 3600, 100)
    bot.repository.claim_nudges(time.time() + 3600, time.time(), 100)
    bot.send(me.command("mydata"))


def _until(condition: Callable[[], Any], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "did not happen in time"
        time.sleep(0.05)


def _exported(value: Any) -> list[Any]:
    """How a stored value shows in the export: times as ISO 8601, maps and lists by item."""
    if isinstance(value, dict):
        return [v for item in value.values() for v in _exported(item)]
    if isinstance(value, (list, tuple)):
        return [v for item in value for v in _exported(item)]
    if isinstance(value, str) and value.startswith("{"):
        return _exported(json.loads(value))  # SQLite's flood counters: a JSON column
    if isinstance(value, float) and value > 1e9:
        return [datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")]
    return [] if value is None else [value]


def _entries(export: Any) -> Iterator[list[Any]]:
    """The scalars of each object of the export, at every depth."""
    if isinstance(export, dict):
        yield values({"": [export]})
        for item in export.values():
            yield from _entries(item)
    elif isinstance(export, list):
        for item in export:
            yield from _entries(item)


def test_mydata_holds_every_record_stored_under_the_user(bot: ServedBot):
    _live_everything(bot)
    document = bot.api.user(ME, "Mia").last()["document"]
    assert document["file_name"] == "messagine-my-data.json"
    export = json.loads(document["content"])
    entries = list(_entries(export))
    everywhere = values({"": [export]})
    checked: dict[str, int] = {}
    for table, records in bot.dump().items():
        for record in records:
            if ME not in values({table: [record]}):
                continue
            group = TABLES.get(table)
            assert group is not None, f"{table} holds ME's records and /mydata has none of it"
            expected: list[Any] = []
            for name, value in record.items():
                form = FIELDS[group].get(name)
                assert form is not None, f"{table}.{name} is stored and /mydata lacks it"
                if form == SAME:
                    expected.extend(_exported(value))
                elif form == REPORT_ID:
                    expected.append(int(value))
                elif form == SELF:
                    assert int(value) == export["profile"]["telegram_id"] == ME
            # A user's record spreads over the profile, settings and counters; any other
            # record is one object of the export, all its fields together.
            pool = [everywhere] if group == "users" else entries
            assert any(all(e in entry for e in expected) for entry in pool), \
                f"{table} record {record} is not in /mydata"
            checked[group] = checked.get(group, 0) + 1
    assert set(checked) >= {"users", "lobby", "chats", "exclusions", "links", "reports",
                            "albums"}
    assert checked["links"] >= 4 and checked["reports"] == 2 and checked["exclusions"] >= 2

    serialised = json.dumps(export)
    for other in (*map(str, OTHERS), "Fay", "Sid", "Tom", "spam from me?", "hello first"):
        assert other not in serialised, f"{other!r} is not ME's data"
    assert all(set(r) == {"report_id", "reason", "at", "status"}
               for r in export["reports_about_you"]), "never who reported, nor in which chat"
    assert all(set(e) == {"reason", "at"} for e in export["excluded_by_others"])
