"""The documents of the two document stores (MongoDB, Firestore) and the records they hold.

Both stores keep the same fields under the same names, so each mapping between a
document and a record (UserState, StoredProfile, ChatRecord, MessageLink, Report, the
flood counters, a lobby entry, an album) is written here once. A document is a plain mapping;
the id, which MongoDB keeps in ``_id`` and Firestore in the document's name, is passed
beside it. SQLite's rows name their columns the same way, so its data export reads
through the same mappings. What the stores select is declared here as data too: the
collections (tables) and fields that the export, erasure and the purge go through, and
the filters of what /about, /stats and the reminders count, which each adapter turns
into its own queries. The operations the adapters perform alike over these mappings are
in ``shared``. No driver is imported here.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

from messagine.domain.age_gate import refusal_marker, refuses
from messagine.domain.albums import Album, Batch, BatchState, Item
from messagine.domain.claims import Claim, ClaimState
from messagine.domain.erasure import (
    Tombstones,
    anonymise_chat,
    banned_remnant,
    partner_key,
)
from messagine.domain.flood import FloodState
from messagine.domain.matching import Candidate, Exclusion
from messagine.domain.nudges import NudgeStatus, activity
from messagine.domain.ratings import RatingState
from messagine.domain.retention import AccountStatus, Cutoffs, chat_idle
from messagine.models import (
    ActiveChat,
    ChatRecord,
    EndReason,
    LobbyEntry,
    MessageLink,
    Nudge,
    Profile,
    Report,
    Retention,
    StoredProfile,
    UserRecords,
    UserState,
)

RECENT_UPDATES = 50
"""How many update ids a user document keeps for de-duplication: Telegram re-sends the
one pending update of a chat, so a re-delivery is always among a user's newest few."""

_FLOOD_FIELDS = tuple(f.name for f in fields(FloodState))

IDLE_SCAN = 5
"""``idle_chats`` reads at most this many users per chat it may return: users long unseen
whose partner is active are passed over, and must not keep the idle ones from the run."""

STALE_CLAIM_S = 86_400.0
"""An in-progress claim whose lease ended this long ago is dropped from the document:
Telegram stops re-sending an update within a day."""


# -- claims ----------------------------------------------------------------------------------

def stored_claim(doc: Mapping[str, Any], update_id: int) -> Claim | None:
    """The claim of ``update_id`` in a user document.

    In progress: an entry of the ``claims`` map (keyed by ``claim_key``); done: the id is
    among ``recent_updates`` and no longer in the map; None: never seen.
    """
    entry = (doc.get("claims") or {}).get(claim_key(update_id))
    if entry is not None:
        return Claim(update_id, ClaimState.IN_PROGRESS, str(entry.get("owner", "")),
                     float(entry.get("lease_until", 0.0)), int(entry.get("attempts", 1)))
    if update_id in (doc.get("recent_updates") or []):
        return Claim(update_id, ClaimState.DONE, "", 0.0)
    return None


def claim_key(update_id: int) -> str:
    """An update's key in the ``claims`` map (not a bare number: a path reads those as indexes)."""
    return f"u{update_id}"


def claim_entry(claim: Claim) -> dict[str, Any]:
    """An in-progress claim as its ``claims`` map entry."""
    return {"owner": claim.owner, "lease_until": claim.lease_until, "attempts": claim.attempts}


def claims_with(doc: Mapping[str, Any], claim: Claim, now: float) -> dict[str, Any]:
    """The document's ``claims`` map with ``claim`` put in and stale entries left out."""
    kept = {key: entry for key, entry in (doc.get("claims") or {}).items()
            if float(entry.get("lease_until", 0.0)) > now - STALE_CLAIM_S}
    return {**kept, claim_key(claim.update_id): claim_entry(claim)}


def recent_with(doc: Mapping[str, Any], update_id: int) -> list[int]:
    """The document's ``recent_updates`` with ``update_id`` added (the newest kept)."""
    recent = [i for i in (doc.get("recent_updates") or []) if i != update_id]
    return [*recent, update_id][-RECENT_UPDATES:]


def utc(seconds: float) -> datetime:
    """A UNIX time as the aware datetime that TTL policies read."""
    return datetime.fromtimestamp(seconds, UTC)


# -- users ---------------------------------------------------------------------------------

def active_chat(doc: Mapping[str, Any]) -> ActiveChat | None:
    """The user's chat from their document's ``chat`` field."""
    chat = doc.get("chat")
    if not chat:
        return None
    return ActiveChat(int(chat["id"]), int(chat["partner"]), str(chat["partner_language"]),
                      float(chat["started_at"]))


def chat_field(chat_id: int, partner_id: int, partner_language: str,
               started_at: float) -> dict[str, Any]:
    """A user document's ``chat`` field."""
    return {"id": chat_id, "partner": partner_id, "partner_language": partner_language,
            "started_at": started_at}


def user_state(user_id: int, doc: Mapping[str, Any], *, is_new: bool = False) -> UserState:
    """The state of the user whose document is ``doc``."""
    return UserState(
        user_id=user_id, language=str(doc["language"]), is_new=is_new,
        blocked=bool(doc.get("blocked")), banned=bool(doc.get("banned")),
        chat=active_chat(doc), waiting_since=doc.get("waiting_since"),
        analytics_opt_out=bool(doc.get("analytics_opt_out")),
        age_confirmed=doc.get("age_answer") == "yes", language_code=doc.get("language_code"),
        reminders_enabled=not doc.get("reminders_off"),
        newest_message=int(doc.get("newest_message") or 0),
        age_refused=doc.get("age_answer") == "no",
    )


def stored_profile(user_id: int, doc: Mapping[str, Any],
                   lobby: Mapping[str, Any] | None) -> StoredProfile:
    """The user's own record from their document and their lobby entry (if any)."""
    return StoredProfile(
        user_id=user_id, first_name=str(doc.get("first_name", "")),
        last_name=doc.get("last_name"), username=doc.get("username"),
        language_code=doc.get("language_code"), language=str(doc["language"]),
        first_seen=float(doc.get("first_seen", 0.0)), last_seen=float(doc.get("last_seen", 0.0)),
        blocked=bool(doc.get("blocked")), banned=bool(doc.get("banned")),
        analytics_opt_out=bool(doc.get("analytics_opt_out")),
        age_answer=doc.get("age_answer"), age_answered_at=doc.get("age_answered_at"),
        reminders_enabled=not doc.get("reminders_off"),
        nudge_pending=bool(doc.get("nudge_pending")), reminded_at=doc.get("reminded_at"),
        lobby=LobbyEntry(str(lobby["language"]), float(lobby["since"]),
                         bool(lobby.get("offered")),
                         tuple(int(u) for u in lobby.get("avoid") or ())) if lobby else None,
        notice_pending=bool(doc.get("notice_pending", True)),  # absent: from before notices
        noticed_at=doc.get("noticed_at"),
        ratings_up=(ratings := rating_state(doc.get("ratings"))).up, ratings_down=ratings.down,
        ratings_flagged=ratings.flagged, ratings_counted_at=tuple(sorted(ratings.recent.values())),
        newest_message=int(doc.get("newest_message") or 0),
    )


def profile_document(profile: StoredProfile) -> dict[str, Any]:
    """A whole user document holding ``profile`` and no chat, lobby or counters."""
    doc = asdict(profile)
    for name in ("user_id", "lobby", "ratings_up", "ratings_down", "ratings_flagged",
                 "ratings_counted_at", "newest_message"):
        del doc[name]
    doc["reminders_off"] = not doc.pop("reminders_enabled")
    return {**doc, "chat": None, "waiting_since": None}


def remnant_document(user_id: int) -> dict[str, Any]:
    """The document a banned user's erasure leaves (``domain.erasure.banned_remnant``)."""
    return profile_document(banned_remnant(user_id))


def refusal_marker_document(user_id: int, refused_at: float) -> dict[str, Any]:
    """The document an age refusal leaves (``domain.age_gate.refusal_marker``)."""
    return profile_document(refusal_marker(user_id, refused_at))


def kept_profile(user_id: int, doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What of the user document ``doc`` erasure keeps (None: nothing).

    A ban's remnant, or an age refusal's marker with its time: kept by the erasure
    itself, else a /deleteme that an outage cut short after this step and Telegram
    re-delivered would find the age gate open.
    """
    if doc is None:
        return None
    if doc.get("banned"):
        return remnant_document(user_id)
    if refuses(doc.get("age_answer")):
        return refusal_marker_document(user_id, float(doc.get("age_answered_at") or 0.0))
    return None


def forgotten_profile() -> dict[str, Any]:
    """The profile fields of a refusal's marker, which its user's later updates keep so."""
    marker = refusal_marker(0, 0.0)
    return {name: getattr(marker, name)
            for name in ("first_name", "last_name", "username", "language_code")}


def user_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A user document as SQLite's ``users`` row: chat and lobby live in tables of their own."""
    return {k: v for k, v in doc.items() if k not in ("chat", "waiting_since")}


def profile_fields(profile: Profile, now: float) -> dict[str, Any]:
    """What every update of the user refreshes: the profile, last seen, reminder due."""
    return {"first_name": profile.first_name, "last_name": profile.last_name,
            "username": profile.username, "language_code": profile.language_code,
            "last_seen": now, "nudge_pending": True, "notice_pending": True}


def came_back(doc: Mapping[str, Any] | None) -> bool:
    """Whether the user document found after an unfinished erasure is a user back.

    Not back: no document, or what the erasure keeps (a ban's remnant, an age refusal's
    marker).
    """
    return doc is not None and kept_profile(0, doc) is None


def new_user_fields(default_language: str, now: float) -> dict[str, Any]:
    """The fields a user's first update creates besides the profile."""
    return {"first_seen": now, "language": default_language, "blocked": False,
            "banned": False, "chat": None, "waiting_since": None, "reminders_off": False}


def flood_state(doc: Mapping[str, Any]) -> FloodState:
    """The flood counters of a user document (its ``flood`` map; fresh if absent)."""
    stored = doc.get("flood") or {}
    return FloodState(**{k: stored[k] for k in _FLOOD_FIELDS if k in stored})


def flood_document(state: FloodState) -> dict[str, Any]:
    """The ``flood`` map of a user document."""
    return asdict(state)


def rating_state(stored: Mapping[str, Any] | str | None) -> RatingState:
    """The ratings of a user document's ``ratings`` map (SQLite: its JSON text)."""
    value = json.loads(stored) if isinstance(stored, str) else (stored or {})
    return RatingState(up=int(value.get("up", 0)), down=int(value.get("down", 0)),
                       flagged=bool(value.get("flagged")),
                       recent={str(k): float(v) for k, v in (value.get("recent") or {}).items()})


def rating_document(state: RatingState) -> dict[str, Any]:
    """The ``ratings`` map of a user document."""
    return {"up": state.up, "down": state.down, "flagged": state.flagged,
            "recent": dict(state.recent)}


def nudge_status(user_id: int, doc: Mapping[str, Any]) -> NudgeStatus:
    """What the reminder rule reads of a user document."""
    return NudgeStatus.of(stored_profile(user_id, doc, None))


def nudge(user_id: int, doc: Mapping[str, Any]) -> Nudge:
    """The reminder claimed for the user whose document is ``doc``."""
    return Nudge(user_id, str(doc["language"]),
                 activity(bool(doc.get("chat")), doc.get("waiting_since") is not None))


# -- the lobby -----------------------------------------------------------------------------

def lobby_document(pool: str, since: float, avoid: Iterable[int],
                   offered: bool) -> dict[str, Any]:
    """A lobby entry: the pool, since when, whom not to meet, whether "*" was offered."""
    return {"language": pool, "since": since, "avoid": sorted(avoid), "offered": offered}


def candidate(user_id: int, entry: Mapping[str, Any],
              user: Mapping[str, Any] | None = None) -> Candidate:
    """A lobby entry (and, if read too, its user's document) as the matching rule reads it."""
    return Candidate(user_id, str(entry["language"]), float(entry["since"]),
                     frozenset(int(u) for u in entry.get("avoid") or ()),
                     banned=bool(user and user.get("banned")),
                     age_refused=bool(user and refuses(user.get("age_answer"))))


# -- chats ---------------------------------------------------------------------------------

def chat_document(users: Iterable[int], language: str, started_at: float,
                  opened_by_update: int) -> dict[str, Any]:
    """A new chat of two users."""
    return {"users": list(users), "language": language, "started_at": started_at,
            "opened_by_update": opened_by_update, "ended_at": None, "ended_by": None,
            "end_reason": None, "closed_by_update": None}


def ended_fields(user_id: int, reason: EndReason, now: float, update_id: int,
                 expires_at: datetime) -> dict[str, Any]:
    """What ending a chat writes into it."""
    return {"ended_at": now, "ended_by": user_id, "end_reason": reason.value,
            "closed_by_update": update_id, "expires_at": expires_at}


def partner_of(doc: Mapping[str, Any], user_id: int) -> int:
    """The other user of a chat document (0 if there is none)."""
    return next((int(u) for u in doc["users"] if u != user_id), 0)


def chat_record(chat_id: int, doc: Mapping[str, Any], user_id: int) -> ChatRecord:
    """A chat document as ``user_id`` sees it."""
    ended_by = doc.get("ended_by")
    return ChatRecord(chat_id, partner_of(doc, user_id), doc["language"], doc["started_at"],
                      doc.get("ended_at"), doc.get("end_reason"),
                      None if ended_by is None else ended_by == user_id,
                      doc.get("opened_by_update"), doc.get("closed_by_update"),
                      partner_key(partner_of(doc, user_id), doc.get("erased_key")))


def anonymised_chat(doc: Mapping[str, Any], user_id: int, tombstone_id: int,
                    key: str | None = None) -> dict[str, Any] | None:
    """The fields that erase ``user_id`` from a chat document; None if not in it.

    ``key``, their protection key, is kept as ``erased_key`` (``domain.erasure``).
    """
    changed = anonymise_chat([int(u) for u in doc.get("users", [])], doc.get("ended_by"),
                             user_id, tombstone_id)
    if changed is None:
        return None
    # Only what changed: a concurrent end of the chat must keep its ender.
    fields: dict[str, Any] = {"users": list(changed.users)}
    if key is not None:
        fields["erased_key"] = key
    if changed.ended_by != doc.get("ended_by"):
        fields["ended_by"] = changed.ended_by
    return fields


# -- message links, exclusions and reports -------------------------------------------------

def link_document(link: MessageLink, expires_at: datetime) -> dict[str, Any]:
    """A message link, expiring at ``expires_at``."""
    return {**asdict(link), "expires_at": expires_at}


def message_link(doc: Mapping[str, Any]) -> MessageLink:
    """The message link of a document."""
    return MessageLink(doc["chat_id"], doc["sender_id"], doc["sender_message_id"],
                       doc["recipient_id"], doc["copy_message_id"], doc["content_type"],
                       doc["sent_at"])


def exclusion_document(user_id: int, other_id: int, reason: str, now: float,
                       other_key: str | None = None) -> dict[str, Any]:
    """One user's exclusion of another (id ``exclusion_id``); ``other_key`` for an erased one."""
    doc = {"user_id": user_id, "other_id": other_id, "reason": reason, "created_at": now}
    return doc if other_key is None else {**doc, "other_key": other_key}


def exclusion(doc: Mapping[str, Any]) -> Exclusion:
    """An exclusion document as the matching rule reads it."""
    return int(doc["user_id"]), int(doc["other_id"]), doc.get("other_key")


def exclusion_id(doc: Mapping[str, Any]) -> str:
    """An exclusion's document id: ``"user:other"``."""
    return f"{doc['user_id']}:{doc['other_id']}"


KEPT = (("reports", "reporter_id", "reported_id", None),
        ("reports", "reported_id", "reporter_id", "reported_key"),
        ("exclusions", "other_id", "user_id", "other_key"))
"""What erasure keeps of the records that name the user (``domain.erasure``): the reports
they made, and others' protections from them (the reports and exclusions about them):
(collection or table, the field naming the user, the field naming the partner, the field
of the keyed hash or None). An exclusion's id names both users, so it moves."""


def kept(doc: Mapping[str, Any], field: str, partner: str, key_field: str | None,
         stones: Tombstones, key: str) -> dict[str, Any]:
    """The fields that erase the user from a record that ``KEPT`` names.

    The tombstone of its partner goes in ``field``, the keyed hash in ``key_field`` if any.
    """
    fields: dict[str, Any] = {field: stones.of(int(doc[partner]))}
    if key_field is not None:
        fields[key_field] = key
    return fields


def report_document(report: Report, reported_key: str | None = None) -> dict[str, Any]:
    """A report, without its id; ``reported_key`` when it is about an erased user."""
    doc = asdict(report)
    del doc["report_id"]
    return doc if reported_key is None else {**doc, "reported_key": reported_key}


def new_report(reporter_id: int, reported_id: int, chat_id: int, reason: str,
               now: float) -> Report:
    """An open report; its id is random, so no counter document is hot (SQLite numbers its own)."""
    return Report(secrets.randbelow(10**9) + 1, reporter_id, reported_id, chat_id, reason, now,
                  "open")


def report(report_id: int, doc: Mapping[str, Any]) -> Report:
    """The report of a document."""
    return Report(report_id, doc["reporter_id"], doc["reported_id"], doc["chat_id"],
                  doc["reason"], doc["created_at"], doc["status"])


# -- what the purge, the export and erasure go through ------------------------------------

Filter = tuple[str, str, Any]
"""A condition on one field: (field, operator, value), in Firestore's operators ("==",
"!=", "<", ">=", "array_contains"), which the MongoDB and SQLite adapters translate."""

Query = tuple[str, tuple[Filter, ...]]
"""A collection and the filters that select from it."""


def expired(now: float, retention: Retention) -> tuple[tuple[str, str, tuple[Filter, ...]], ...]:
    """What the purge deletes, as (kind, collection or table, filters).

    The first filter is the time field before its cutoff; the kinds are those that
    ``Repository.purge_expired`` counts.
    """
    return (("messages", "message_links", (("sent_at", "<", now - retention.messages_s),)),
            ("claims", "claimed_updates", (("claimed_at", "<", now - retention.claims_s),)),
            ("chats", "chats", (("ended_at", "<", now - retention.chats_s),)),
            ("reports", "reports", (("created_at", "<", now - retention.reports_s),
                                    ("ban_on_return", "!=", True))),  # outlives_period
            ("exclusions", "exclusions", (("created_at", "<", now - retention.exclusions_s),)),
            ("age_refusals", "users", (("age_answered_at", "<", now - retention.age_refusals_s),
                                       ("age_answer", "==", "no"), ("banned", "==", False))))


EXPORTED = (("message_links", ("sender_id", "recipient_id")),
            ("exclusions", ("user_id", "other_id")), ("reports", ("reporter_id", "reported_id")),
            ("albums", ("sender_id",)))
"""The records about a user besides chats, for ``user_records``, in its order: (the
collection or table, the fields of which either names the user)."""

ERASED = (("messages", "message_links", ("sender_id", "recipient_id")),
          ("exclusions", "exclusions", ("user_id",)), ("messages", "albums", ("sender_id",)))
"""What erasure deletes besides the lobby entry and the profile: (the kind it is counted
as, the collection or table, the fields of which either names the user). An album on its
way holds message ids; the exclusions and reports about the user are kept (``KEPT``)."""


def user_records(user_id: int, doc: Mapping[str, Any], lobby: Mapping[str, Any] | None,
                 chats: Iterable[tuple[int, Mapping[str, Any]]],
                 links: Iterable[Mapping[str, Any]], exclusions: Iterable[Mapping[str, Any]],
                 reports: Iterable[tuple[int, Mapping[str, Any]]],
                 album_docs: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> UserRecords:
    """Everything stored under a user, from their documents, each kind in time order.

    ``doc``: their user document (``flood`` as a map); ``chats``: (chat id, document) of
    every chat they were in; ``links``: every link of a message they sent or received
    (once each); ``exclusions``: those they made and those about them; ``reports``:
    (report id, document) of those they made and those about them; ``album_docs``: (key,
    document) of the album records they sent.
    """
    ordered = sorted(chats, key=lambda c: (c[1]["started_at"], c[1]["opened_by_update"] or 0))
    every_link = sorted((message_link(d) for d in links), key=lambda m: m.sent_at)
    every_exclusion = [(int(d["user_id"]), int(d["other_id"]), str(d["reason"]),
                        float(d["created_at"])) for d in exclusions]
    every_report = sorted((report(i, d) for i, d in reports), key=lambda r: r.created_at)
    return UserRecords(
        stored_profile(user_id, doc, lobby),
        [chat_record(chat_id, chat, user_id) for chat_id, chat in ordered],
        [m for m in every_link if m.sender_id == user_id],
        [(other, reason, at) for by, other, reason, at in every_exclusion if by == user_id],
        [r for r in every_report if r.reporter_id == user_id],
        received=[m for m in every_link if m.recipient_id == user_id],
        excluded_by=[(by, reason, at) for by, other, reason, at in every_exclusion
                     if other == user_id],
        reports_about=[r for r in every_report if r.reported_id == user_id],
        flood=dict(doc.get("flood") or {}),
        recent_updates=[int(u) for u in doc.get("recent_updates") or ()],
        claims={int(key.removeprefix("u")): dict(entry)
                for key, entry in (doc.get("claims") or {}).items()},
        albums=sorted((album(key, d) for key, d in album_docs),
                      key=lambda a: min((b.last_item_at for b in a.batches), default=0.0)),
    )


# -- albums --------------------------------------------------------------------------------

def album_document(album: Album, expires: datetime | None = None) -> dict[str, Any]:
    """An album record (``domain.albums``); ``expires``: its TTL field, where the store has one.

    Items are maps, not pairs: Firestore holds no array inside an array.
    """
    doc: dict[str, Any] = {
        "chat_id": album.chat_id, "sender_id": album.sender_id, "version": album.version,
        "batches": [{"number": b.number, "state": b.state.value,
                     "last_item_at": b.last_item_at, "update_id": b.update_id,
                     "owner": b.owner, "lease_until": b.lease_until,
                     "items": [{"id": i.message_id, "type": i.content_type} for i in b.items]}
                    for b in album.batches]}
    if expires is not None:
        doc["expires_at"] = expires
    return doc


def album(key: str, doc: Mapping[str, Any]) -> Album:
    """The album record of a document."""
    return Album(key, int(doc["chat_id"]), int(doc["sender_id"]), tuple(
        Batch(int(b["number"]), tuple(Item(int(i["id"]), str(i["type"])) for i in b["items"]),
              BatchState(b["state"]), float(b["last_item_at"]), int(b["update_id"]),
              str(b.get("owner", "")), float(b.get("lease_until", 0.0)))
        for b in doc.get("batches") or ()), int(doc.get("version", 0)))


# -- counting ------------------------------------------------------------------------------

def count_each(queries: Mapping[str, Query],
               count: Callable[[str, tuple[Filter, ...]], int]) -> dict[str, int]:
    """Each query's count, by its name; ``count`` is the store's (collection, filters)."""
    return {name: count(collection, filters) for name, (collection, filters) in queries.items()}


_ACTIVE: Filter = ("ended_at", "==", None)
_ENDED: Filter = ("ended_at", "!=", None)


def count_queries(user_id: int) -> dict[str, Query]:
    """What /about counts (``Counts``), by its fields."""
    return {"users": ("users", ()), "active_chats": ("chats", (_ACTIVE,)),
            "previous_chats": ("chats", (_ENDED,)),
            "my_previous_chats": ("chats", (("users", "array_contains", user_id), _ENDED)),
            "waiting": ("lobby", ())}


def moderation_queries(since: float) -> dict[str, Query]:
    """What /stats counts (``ModerationStats``), by its fields; "today" is from ``since``."""
    return {"users": ("users", ()), "waiting": ("lobby", ()),
            "active_chats": ("chats", (_ACTIVE,)),
            "chats_today": ("chats", (("started_at", ">=", since),)),
            "reports_today": ("reports", (("created_at", ">=", since),))}


def nudge_due(idle_before: float) -> tuple[Filter, ...]:
    """The users a reminder is due to, before the reasons that exclude some of them."""
    return ("nudge_pending", "==", True), ("last_seen", "<", idle_before)


def idle_excluded_queries(idle_before: float) -> dict[str, Query]:
    """The due users no reminder goes to, by reason; each reason leaves out the ones before."""
    due = nudge_due(idle_before)
    return {"blocked": ("users", (*due, ("blocked", "==", True))),
            "banned": ("users", (*due, ("blocked", "==", False), ("banned", "==", True))),
            "opted_out": ("users", (*due, ("blocked", "==", False), ("banned", "==", False),
                                    ("reminders_off", "==", True)))}


# -- retention -----------------------------------------------------------------------------

def account(user_id: int, doc: Mapping[str, Any]) -> AccountStatus:
    """What the retention rules read of a user document (or ``users`` row)."""
    return AccountStatus.of(stored_profile(user_id, doc, None))


def notice_candidates(cut: Cutoffs) -> tuple[Filter, ...]:
    """The users an inactivity notice may be due to, before ``notice_due`` (by last seen)."""
    return (("notice_pending", "==", True), ("banned", "==", False),
            ("last_seen", "<", cut.notice_seen_before))


def noticed(cut: Cutoffs) -> tuple[Filter, ...]:
    """The users noticed long enough ago, before ``erasure_due`` (by the notice's time)."""
    return (("notice_pending", "==", False), ("banned", "==", False),
            ("noticed_at", "<", cut.noticed_before))


def idle_chats(users: Iterable[tuple[int, Mapping[str, Any]]],
               last_seen: Callable[[int], float | None], cut: Cutoffs,
               limit: int) -> list[tuple[int, str]]:
    """The idle chats (``Repository.idle_chats``) among ``users`` long unseen in a chat.

    ``users``: (id, document), longest unseen first, at most ``IDLE_SCAN`` per chat wanted;
    ``last_seen``: when a partner was last seen (None: they are gone).
    """
    found: dict[int, tuple[int, str]] = {}
    for user_id, doc in users:
        seen = last_seen(int(doc["chat"]["partner"]))
        if seen is not None and chat_idle((doc["last_seen"], seen), cut.active_before):
            found.setdefault(int(doc["chat"]["id"]), (user_id, doc["language"]))
        if len(found) >= limit:
            break
    return list(found.values())
