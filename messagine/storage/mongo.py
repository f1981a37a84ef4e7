"""The MongoDB repository: the production backend, for many instances on one Atlas cluster.

Atomicity comes from single-document operations and unique keys, never multi-document
transactions (they cost more and abort under contention):

- an update is claimed by pushing its id into the sender's user document with a filter
  that excludes it, as one upsert: a re-delivery fails the filter and the upsert's insert
  hits the unique ``_id`` (DuplicateKeyError), so claim, profile refresh and state load are
  one command;
- pairing takes a short lease on the language pool's lock document (one conditional
  upsert) so that choosing a partner and writing the chat cannot interleave with another
  instance's; the pairing's steps are written into the lock first as an intent that the
  next holder rolls forward if the instance died half way;
- a chat ends when its document's ``ended_at`` goes from null to a time, which only one
  of two concurrent callers can do.

docs/storage.md argues each operation in full. pymongo is imported only here.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import (
    DuplicateKeyError,
)

from messagine.domain import age_gate, albums, matching
from messagine.domain.age_gate import stores_profile
from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S, Claim, ClaimState, Decision, decide
from messagine.domain.erasure import (
    UNCONFIGURED_PEPPER,
    Tombstones,
    protection_key,
    returned,
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.ratings import RatingRule, RatingVerdict, rate
from messagine.domain.retention import AccountStatus, Cutoffs, chat_idle, erasure_due
from messagine.models import (
    ActiveChat,
    ChatRecord,
    Counts,
    EndedChat,
    EndReason,
    MatchOutcome,
    MatchResult,
    MessageLink,
    ModerationStats,
    Nudge,
    OpenedUpdate,
    Profile,
    Report,
    Retention,
    UserRecords,
    UserState,
)
from messagine.storage import documents as docs
from messagine.storage.mongo_client import SCHEMA_VERSION, connect, create_indexes
from messagine.storage.mongo_client import (
    unavailable_as_storage_error as _unavailable_as_storage_error,
)
from messagine.storage.mongo_lease import PoolLease
from messagine.storage.mongo_pipeline import open_update_pipeline
from messagine.storage.port import wrap_public_methods

_RATING_ATTEMPTS = 8  # a rating beaten by another one on the same user is decided again
_IDLE_SCAN = 5
"""``idle_chats`` reads at most this many users per chat it may return: users long unseen
whose partner is active are passed over, and must not keep the idle ones from the run."""


def _delete_some(collection: Any, query: dict[str, Any], limit: int) -> int:
    """Delete at most ``limit`` documents matching ``query``; how many went."""
    ids = [doc["_id"] for doc in collection.find(query, {"_id": 1}).limit(limit)]
    if not ids:
        return 0
    return int(collection.delete_many({"_id": {"$in": ids}, **query}).deleted_count)


T = TypeVar("T")


@wrap_public_methods(_unavailable_as_storage_error)
class MongoRepository:
    """The repository port on a MongoDB database (Atlas in production)."""

    backend = "mongo"

    def __init__(
        self, uri: str, database: str = "messagine", *, message_retention_days: int = 30,
        chat_retention_days: int = 180, update_retention_s: int = 86_400,
        client_factory: Callable[..., Any] | None = None, flood_rule: FloodRule | None = None,
        pepper: bytes = UNCONFIGURED_PEPPER,
    ) -> None:
        self._flood_rule = flood_rule or FloodRule()
        self._pepper = pepper
        self._chat_retention = timedelta(days=chat_retention_days)
        self._uri = uri
        self._database_name = database
        self._message_retention = timedelta(days=message_retention_days)
        self._update_retention_s = update_retention_s
        self._client_factory = client_factory or pymongo.MongoClient
        self._client: Any = None
        self._db: Any = None
        self._lock = threading.Lock()
        self._indexes_ready = False

    # -- the client ----------------------------------------------------------------------

    @property
    def db(self) -> Any:
        """The database, connecting lazily: one client per instance, reused by every request."""
        db = self._connect()
        if not self._indexes_ready:
            # One read per instance: the indexes are created only where they are absent.
            marker = db.meta.find_one({"_id": "schema"})
            if marker is None or marker.get("version") != SCHEMA_VERSION:
                self.init_schema()
            self._indexes_ready = True
        return db

    def _connect(self) -> Any:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    self._client = connect(self._client_factory, self._uri)
                    self._db = self._client[self._database_name]
        return self._db

    def close(self) -> None:
        """Close the client (tests; an instance keeps it for its life)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._db = None
            self._indexes_ready = False

    def init_schema(self) -> None:
        """Create every index, idempotently (``python -m messagine init-db``, and first use)."""
        create_indexes(self._connect(), self._update_retention_s)
        self._indexes_ready = True

    # -- reading state -------------------------------------------------------------------

    @staticmethod
    def _state(doc: Mapping[str, Any]) -> UserState:
        return docs.user_state(int(doc["_id"]), doc)

    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        return self._state(doc) if doc else None

    # -- updates and users ---------------------------------------------------------------

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None, owner: str = "", lease_s: float = LEASE_S,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: one command for claim, profile, flood and state.

        A new update is claimed by the pipeline's write; an id the user's document holds
        already (the write's filter fails) is decided from that document, and an expired
        lease is taken over by one conditional update.
        """
        if profile is None:
            try:
                self.db.claimed_updates.insert_one(
                    {"_id": update_id, "claimed_at": datetime.now(UTC)})
            except DuplicateKeyError:
                return OpenedUpdate(duplicate=True)
            return OpenedUpdate(duplicate=False)
        try:
            # The document as it was before: the pipeline applied flood.admit to it on the
            # server, and applying it here again gives the verdict without storing it.
            before = self.db.users.find_one_and_update(
                {"_id": profile.user_id, "recent_updates": {"$ne": update_id},
                 "banned": {"$ne": True}},
                open_update_pipeline(update_id, profile, default_language, now, album,
                                     self._flood_rule, Claim(update_id, ClaimState.IN_PROGRESS,
                                                             owner, now + lease_s)),
                projection={"recent_updates": 0}, upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            return self._open_known(update_id, profile, now, owner, lease_s)
        doc = {**(before or docs.new_user_fields(default_language, now)),
               **docs.profile_fields(profile, now)}
        if not stores_profile(doc.get("age_answer")):  # the marker stays the marker
            self.db.users.update_one({"_id": profile.user_id}, {"$set": docs.forgotten_profile()})
        _, verdict = admit(docs.flood_state(before or {}), now, album, self._flood_rule)
        return OpenedUpdate(duplicate=False,
                            user=docs.user_state(profile.user_id, doc, is_new=before is None),
                            throttled=verdict.throttled, warn=verdict.warn)

    def _open_known(self, update_id: int, profile: Profile, now: float, owner: str,
                    lease_s: float) -> OpenedUpdate:
        """An update id the user's document holds: done, busy, or taken over."""
        doc = self.db.users.find_one({"_id": profile.user_id})
        if doc and doc.get("banned"):  # claimed alone (domain.erasure)
            opened = self.open_update(update_id, None, "", now)
            return replace(opened, user=None if opened.duplicate else self._state(doc))
        decision, claim = decide(docs.stored_claim(doc or {}, update_id), update_id, owner,
                                 now, lease_s)
        if claim is None:
            return OpenedUpdate(duplicate=decision is Decision.DONE,
                                busy=decision is Decision.BUSY)
        key = "claims." + docs.claim_key(update_id)
        taken = self.db.users.find_one_and_update(
            {"_id": profile.user_id, f"{key}.lease_until": {"$lte": now}},
            {"$set": {key: docs.claim_entry(claim), **docs.profile_fields(profile, now)}},
            projection={"recent_updates": 0}, return_document=ReturnDocument.AFTER)
        if taken is None:  # another attempt took it over first, or finished it
            return OpenedUpdate(duplicate=False, busy=True)
        if not stores_profile(taken.get("age_answer")):
            self.db.users.update_one({"_id": profile.user_id}, {"$set": docs.forgotten_profile()})
        return OpenedUpdate(duplicate=False, user=docs.user_state(profile.user_id, taken),
                            resumed=True)

    def finish_update(self, update_id: int, user_id: int | None, owner: str) -> None:
        """See ``Repository.finish_update``: one update; the owner is not checked.

        A claim taken over is finished by whichever attempt ends first; the work of both
        is done by then.
        """
        del owner
        if user_id is not None:
            self.db.users.update_one({"_id": user_id},
                                     {"$unset": {"claims." + docs.claim_key(update_id): ""}})

    def release_update(self, update_id: int, owner: str | None = None) -> None:
        """See ``Repository.release_update``."""
        key = "claims." + docs.claim_key(update_id)
        query: dict[str, Any] = {"recent_updates": update_id}
        if owner is not None:  # not a claim another attempt took over since
            query["$or"] = [{key: {"$exists": False}}, {f"{key}.owner": owner}]
        self.db.users.update_one(query, {"$pull": {"recent_updates": update_id},
                                         "$unset": {key: ""}})
        self.db.claimed_updates.delete_one({"_id": update_id})

    def set_language(self, user_id: int, language: str) -> UserState:
        """See ``Repository.set_language``; a waiting user's entry moves under both locks."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        if doc is None:
            raise LookupError(f"unknown user {user_id}")
        if doc.get("chat") or doc["language"] == language:
            return self._state(doc)
        if doc.get("waiting_since") is None:
            doc = self.db.users.find_one_and_update(
                {"_id": user_id, "chat": None}, {"$set": {"language": language}},
                projection={"recent_updates": 0}, return_document=ReturnDocument.AFTER)
            return self._state(doc or self.db.users.find_one({"_id": user_id}))
        with self._pool_lock(self._pool_of(user_id, doc["language"])):
            entry = self.db.lobby.find_one_and_delete({"_id": user_id})
        with self._pool_lock(language):
            doc = self.db.users.find_one_and_update(
                {"_id": user_id, "chat": None}, {"$set": {"language": language}},
                projection={"recent_updates": 0}, return_document=ReturnDocument.AFTER)
            if doc is not None and entry is not None:
                entry["language"] = language
                self.db.lobby.replace_one({"_id": user_id}, entry, upsert=True)
        return self._state(doc or self.db.users.find_one({"_id": user_id}))

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        doc = self.db.users.find_one_and_update(
            {"_id": user_id}, {"$set": {"blocked": blocked}}, projection={"language": 1})
        if blocked and doc is not None:
            self._leave_lobby(user_id, doc["language"])

    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"analytics_opt_out": opt_out}})

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        answer = {"age_answer": age_gate.answer(confirmed), "age_answered_at": now}
        marker = docs.refusal_marker_document(user_id, now).items()  # if erased meanwhile
        self.db.users.update_one(
            {"_id": user_id, "age_answer": {"$nin": list(age_gate.kept_answers(confirmed))}},
            {"$set": answer, "$setOnInsert": {k: v for k, v in marker if k not in answer}},
            upsert=not confirmed)

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        doc = self.db.users.find_one({"_id": user_id})
        if doc is None:
            return None
        return docs.user_records(
            user_id, doc, self.db.lobby.find_one({"_id": user_id}),
            ((int(c["_id"]), c) for c in self.db.chats.find({"users": user_id})),
            self.db.message_links.find({"$or": [{"sender_id": user_id},
                                                {"recipient_id": user_id}]}),
            self.db.exclusions.find({"$or": [{"user_id": user_id}, {"other_id": user_id}]}),
            ((int(r["_id"]), r) for r in self.db.reports.find(
                {"$or": [{"reporter_id": user_id}, {"reported_id": user_id}]})),
            ((str(a["_id"]), a) for a in self.db.albums.find({"sender_id": user_id})))

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``."""
        db, stones, key = self.db, Tombstones(), protection_key(self._pepper, user_id)
        counts = {
            "messages": db.message_links.delete_many(
                {"$or": [{"sender_id": user_id}, {"recipient_id": user_id}]}).deleted_count,
            "exclusions": db.exclusions.delete_many({"user_id": user_id}).deleted_count,
            "lobby": db.lobby.delete_many({"_id": user_id}).deleted_count,
            "chats_anonymised": 0,
        }
        # An album on its way: message ids too.
        counts["messages"] += db.albums.delete_many({"sender_id": user_id}).deleted_count
        for chat in db.chats.find({"users": user_id}, {"users": 1, "ended_by": 1}):
            fields = docs.anonymised_chat(chat, user_id, stones.of(docs.partner_of(chat, user_id)),
                                          key)
            if fields is not None:
                db.chats.update_one({"_id": chat["_id"]}, {"$set": fields})
                counts["chats_anonymised"] += 1
        db.users.update_many({"chat.partner": user_id}, {"$set": {"chat": None}})
        for report in db.reports.find({"reporter_id": user_id}, {"reported_id": 1}):
            db.reports.update_one({"_id": report["_id"]},
                                  {"$set": {"reporter_id": stones.of(report["reported_id"])}})
        # Others' protections stay (domain.erasure): their exclusions and reports.
        for found in db.exclusions.find({"other_id": user_id}, {"_id": 0}):
            kept = docs.kept_exclusion(found, stones.of(found["user_id"]), key)
            db.exclusions.replace_one({"_id": docs.exclusion_id(kept)}, kept, upsert=True)
        db.exclusions.delete_many({"other_id": user_id})
        for report in db.reports.find({"reported_id": user_id}, {"reporter_id": 1}):
            db.reports.update_one({"_id": report["_id"]}, {"$set": docs.kept_report(
                stones.of(report["reporter_id"]), key)})
        db.lobby.update_many({"avoid": user_id}, {"$pull": {"avoid": user_id}})
        # A ban outlives erasure (domain.erasure): only the banned remnant stays.
        counts["kept_for_ban"] = db.users.replace_one(
            {"_id": user_id, "banned": True}, docs.remnant_document(user_id)).modified_count
        counts["profile"] = db.users.delete_one({"_id": user_id, "banned": False}).deleted_count
        return counts

    @_unavailable_as_storage_error
    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``.

        TTL indexes expire the same documents, but the TTL monitor runs only once a
        minute and may fall behind under load; this keeps the published retention.
        """
        return {
            "messages": _delete_some(self.db.message_links,
                                     {"sent_at": {"$lt": now - retention.messages_s}}, limit),
            "claims": _delete_some(self.db.claimed_updates,
                                   {"claimed_at": {"$lt": docs.utc(now - retention.claims_s)}},
                                   limit),
            "chats": _delete_some(self.db.chats,
                                  {"ended_at": {"$lt": now - retention.chats_s}}, limit),
            "reports": _delete_some(self.db.reports,
                                    {"created_at": {"$lt": now - retention.reports_s},
                                     "ban_on_return": {"$ne": True}}, limit),  # a ban stays
            "exclusions": _delete_some(self.db.exclusions, {
                "created_at": {"$lt": now - retention.exclusions_s}}, limit),
            "age_refusals": _delete_some(self.db.users, {"age_answer": "no", "banned": False,
                "age_answered_at": {"$lt": now - retention.age_refusals_s}}, limit),
        }

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.idle_chats``: users long unseen in a chat, then their partners."""
        found: dict[int, tuple[int, str]] = {}
        for doc in self.db.users.find(
                {"chat": {"$ne": None}, "last_seen": {"$lt": cut.active_before}},
                {"language": 1, "chat": 1, "last_seen": 1}).sort("last_seen", 1).limit(
                    _IDLE_SCAN * limit):
            partner = self.db.users.find_one({"_id": doc["chat"]["partner"]}, {"last_seen": 1})
            if partner and chat_idle((doc["last_seen"], partner["last_seen"]), cut.active_before):
                found.setdefault(int(doc["chat"]["id"]), (int(doc["_id"]), doc["language"]))
            if len(found) >= limit:
                break
        return list(found.values())

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_inactivity_notices``: each by one conditional update."""
        claimed: list[tuple[int, str]] = []
        while len(claimed) < limit:
            doc = self.db.users.find_one_and_update(
                {"notice_pending": {"$ne": False}, "banned": False, "age_answer": {"$ne": "no"},
                 "last_seen": {"$lt": cut.notice_seen_before}},
                {"$set": {"notice_pending": False, "noticed_at": now}},
                projection={"language": 1}, sort=[("last_seen", 1)])
            if doc is None:
                break
            claimed.append((int(doc["_id"]), str(doc["language"])))
        return claimed

    def inactive_accounts(self, cut: Cutoffs, limit: int) -> list[int]:
        """See ``Repository.inactive_accounts``."""
        return [int(doc["_id"]) for doc in self.db.users.find(
            {"notice_pending": False, "banned": False, "noticed_at": {"$lt": cut.noticed_before}},
            {"recent_updates": 0, "claims": 0}).sort("noticed_at", 1).limit(limit)
            if erasure_due(AccountStatus.of(docs.stored_profile(int(doc["_id"]), doc, None)), cut)]

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        found = list(self.db.chats.find({"users": user_id}).sort(
            [("started_at", -1), ("opened_by_update", -1)]).limit(1))
        if not found:
            return None
        return docs.chat_record(int(found[0]["_id"]), found[0], user_id)

    def chat_of(self, user_id: int, chat_id: int) -> ChatRecord | None:
        """See ``Repository.chat_of``."""
        doc = self.db.chats.find_one({"_id": chat_id, "users": user_id})
        return None if doc is None else docs.chat_record(chat_id, doc, user_id)

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        docs = self.db.message_links.find(
            {"chat_id": chat_id, "sender_id": sender_id}, {"sender_message_id": 1}).sort(
            "sender_message_id", -1).limit(limit)
        return sorted(int(d["sender_message_id"]) for d in docs)

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """See ``Repository.add_report``; ids are random, so no counter document is hot."""
        report = Report(secrets.randbelow(10**9) + 1, reporter_id, reported_id, chat_id, reason,
                        now, "open")
        earlier = self.db.reports.find_one_and_update(
            {"reporter_id": reporter_id, "chat_id": chat_id},
            {"$setOnInsert": {"_id": report.report_id,
                              **docs.report_document(report, reported_key)}},
            projection={"_id": 1}, upsert=True)
        return report if earlier is None else None

    def resolve_report(self, report_id: int, status: str) -> Report | None:
        """See ``Repository.resolve_report``: the open -> status change is won once."""
        doc = self.db.reports.find_one_and_update(
            {"_id": report_id, "status": "open"}, {"$set": {"status": status}},
            return_document=ReturnDocument.AFTER)
        return None if doc is None else docs.report(int(doc["_id"]), doc)

    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        doc = self.db.users.find_one_and_update(
            {"_id": user_id}, {"$set": {"banned": banned}}, projection={"language": 1})
        if doc is None:
            return False
        if banned:
            self._leave_lobby(user_id, doc["language"])
        return True

    def moderation_stats(self, since: float) -> ModerationStats:
        """See ``Repository.moderation_stats``."""
        db = self.db
        return ModerationStats(
            users=db.users.estimated_document_count(),
            waiting=db.lobby.estimated_document_count(),
            active_chats=db.chats.count_documents({"ended_at": None}),
            chats_today=db.chats.count_documents({"started_at": {"$gte": since}}),
            reports_today=db.reports.count_documents({"created_at": {"$gte": since}}),
        )

    def _due(self, idle_before: float) -> dict[str, Any]:
        return {"nudge_pending": True, "last_seen": {"$lt": idle_before}}

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: each user claimed by one conditional update."""
        claimed: list[Nudge] = []
        while len(claimed) < limit:
            doc = self.db.users.find_one_and_update(
                {**self._due(idle_before), "blocked": False, "banned": False,
                 "reminders_off": {"$ne": True}},
                {"$set": {"nudge_pending": False, "reminded_at": now}},
                projection={"language": 1, "chat": 1, "waiting_since": 1},
                sort=[("last_seen", 1)])
            if doc is None:
                break
            claimed.append(docs.nudge(int(doc["_id"]), doc))
        return claimed

    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"nudge_pending": True}})

    def release_inactivity_notice(self, user_id: int) -> None:
        """See ``Repository.release_inactivity_notice``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"notice_pending": True}})

    def count_idle_excluded(self, idle_before: float) -> dict[str, int]:
        """See ``Repository.count_idle_excluded``."""
        users = self.db.users
        due = self._due(idle_before)
        return {
            "blocked": users.count_documents({**due, "blocked": True}),
            "banned": users.count_documents({**due, "blocked": False, "banned": True}),
            "opted_out": users.count_documents({**due, "blocked": False, "banned": False,
                                                "reminders_off": True}),
        }

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``: each removal under its pool's lease."""
        expired: list[tuple[int, str]] = []
        for entry in list(self.db.lobby.find({"since": {"$lt": waiting_before}},
                                             {"language": 1}).sort("since", 1).limit(limit)):
            with self._pool_lock(entry["language"]):
                removed = self.db.lobby.delete_one(
                    {"_id": entry["_id"], "since": {"$lt": waiting_before}}).deleted_count
                if removed:
                    self.db.users.update_one({"_id": entry["_id"], "chat": None},
                                             {"$set": {"waiting_since": None}})
            if removed:
                expired.append((int(entry["_id"]), entry["language"]))
        return expired

    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"reminders_off": not enabled}})

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        counts: dict[int, int] = {}
        for doc in self.db.message_links.find({"chat_id": chat_id}, {"sender_id": 1}):
            counts[int(doc["sender_id"])] = counts.get(int(doc["sender_id"]), 0) + 1
        return counts

    def note_newest(self, user_id: int, message_id: int) -> None:
        """See ``Repository.note_newest``."""
        self.db.users.update_one({"_id": user_id}, {"$max": {"newest_message": message_id}})

    def rate_user(self, rated_id: int, chat_id: int, positive: bool, now: float,
                  rule: RatingRule) -> RatingVerdict:
        """See ``Repository.rate_user``: written only if the ratings are still as read."""
        for _ in range(_RATING_ATTEMPTS):
            doc = self.db.users.find_one({"_id": rated_id}, {"ratings": 1})
            if doc is None:
                break
            state, verdict = rate(docs.rating_state(doc.get("ratings")), chat_id, positive,
                                  now, rule)
            if not verdict.counted or self.db.users.update_one(
                    {"_id": rated_id, "ratings": doc.get("ratings")},
                    {"$set": {"ratings": docs.rating_document(state)}}).modified_count:
                return verdict
        return RatingVerdict(counted=False)

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """See ``Repository.exclude_pair``; waiting entries learn of it at once."""
        self.db.exclusions.update_one(
            {"_id": f"{user_id}:{other_id}"},
            {"$setOnInsert": docs.exclusion_document(user_id, other_id, reason, now, other_key)},
            upsert=True)
        self.db.lobby.update_one({"_id": user_id}, {"$addToSet": {"avoid": other_id}})
        self.db.lobby.update_one({"_id": other_id}, {"$addToSet": {"avoid": user_id}})

    def ban_erased(self, report_id: int) -> list[int] | None:
        """See ``Repository.ban_erased``."""
        report = self.db.reports.find_one_and_update(
            {"_id": report_id, "reported_key": {"$ne": None}},
            {"$set": {"ban_on_return": True}}, projection={"reported_key": 1})
        if report is None:
            return None
        return [user_id for user_id in returned(
            self._pepper, report["reported_key"],
            (int(e["_id"]) for e in self.db.lobby.find({}, {"_id": 1})))
            if self.set_banned(user_id, banned=True)]

    def apply_erased_ban(self, user_id: int) -> bool:
        """See ``Repository.apply_erased_ban``."""
        return self.db.reports.find_one({"reported_key": protection_key(self._pepper, user_id),
                                         "ban_on_return": True}, {"_id": 1}) is not None \
            and self.set_banned(user_id, banned=True)

    # -- the pool lock -------------------------------------------------------------------

    def _pool_lock(self, language: str) -> PoolLease:
        return PoolLease(self.db.locks, f"lobby:{language}", self._apply_pairing)

    def _avoided_by(self, user_id: int, recent_partners: int) -> frozenset[int]:
        """The user's recent partners and everyone excluded in either direction."""
        chats = self.db.chats.find({"users": user_id}, {"users": 1}).sort(
            "started_at", -1).limit(recent_partners) if recent_partners > 0 else []
        key = protection_key(self._pepper, user_id)
        return matching.avoided(
            user_id, matching.recent_partners(user_id, (c["users"] for c in chats),
                                              recent_partners),
            map(docs.exclusion, self.db.exclusions.find(
                {"$or": [{"user_id": user_id}, {"other_id": user_id}, {"other_key": key}]})),
            key)

    def _apply_pairing(self, intent: Mapping[str, Any]) -> None:
        """Write a pairing; every step is idempotent, so a crashed one is rolled forward."""
        a, b, chat_id = intent["searcher"], intent["partner"], intent["chat_id"]
        with contextlib.suppress(DuplicateKeyError):  # written before the instance died
            self.db.chats.insert_one({"_id": chat_id, **docs.chat_document(
                [b, a], intent["language"], intent["started_at"], intent["update_id"])})
        for user, partner, partner_language in (
                (a, b, intent["partner_language"]), (b, a, intent["language_of_searcher"])):
            self.db.users.update_one(
                {"_id": user, "chat": None},
                {"$set": {"chat": docs.chat_field(chat_id, partner, partner_language,
                                                  intent["started_at"]),
                          "waiting_since": None}})
        self.db.lobby.delete_many({"_id": {"$in": [a, b]}})

    # -- lobby and chats -----------------------------------------------------------------

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``: decided and written under the pool's lease."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        if doc is None:
            raise LookupError(f"unknown user {user_id}")
        resumed = self._resumed_chat(doc, update_id)
        if resumed is not None:
            return resumed
        language = self._pool_of(user_id, doc["language"])  # "*": the any-language pool
        with self._pool_lock(language) as lock:
            doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
            resumed = self._resumed_chat(doc, update_id) or age_gate.refused_search(
                age_gate.refuses(doc.get("age_answer")))
            if resumed is not None:
                return resumed
            avoid = self._avoided_by(user_id, recent_partners)
            # The server narrows the read to the longest-waiting entry that neither avoid
            # list rules out (one document: the lease is held meanwhile); the rule decides.
            found = self.db.lobby.find_one(
                {"language": language, "_id": {"$nin": [user_id, *avoid]},
                 "avoid": {"$ne": user_id}}, sort=[("since", 1), ("_id", 1)])
            candidate = matching.pick(matching.Seeker(user_id, language, avoid), [
                docs.candidate(int(found["_id"]), found)] if found else [])
            if candidate is None:
                was_waiting = doc.get("waiting_since") is not None
                self.db.lobby.update_one(
                    {"_id": user_id},
                    {"$setOnInsert": {"language": language, "since": now},
                     "$set": {"avoid": sorted(avoid)}}, upsert=True)
                if not was_waiting:
                    self.db.users.update_one({"_id": user_id}, {"$set": {"waiting_since": now}})
                return matching.queued(was_waiting,
                                       self.db.lobby.count_documents({"language": language}))
            partner = self.db.users.find_one({"_id": candidate.user_id}, {"language": 1})
            intent = {"searcher": user_id, "partner": candidate.user_id,
                      "chat_id": secrets.randbits(62), "language": language,
                      "language_of_searcher": doc["language"],
                      "partner_language": partner["language"] if partner else language,
                      "started_at": now, "update_id": update_id}
            lock.record_intent(intent)
            self._apply_pairing(intent)
            lock.clear_intent()
        return MatchResult(MatchOutcome.MATCHED, ActiveChat(
            intent["chat_id"], intent["partner"], intent["partner_language"], now),
            partner_waiting_since=candidate.since)

    def _pool_of(self, user_id: int, language: str) -> str:
        """The pool the user waits in: their lobby entry's, else their language's."""
        entry = self.db.lobby.find_one({"_id": user_id}, {"language": 1})
        return str(entry["language"]) if entry else language

    def join_any_language(self, user_id: int) -> bool:
        """See ``Repository.join_any_language``: under the leases of both pools."""
        entry = self.db.lobby.find_one({"_id": user_id}, {"language": 1})
        if entry is None or entry["language"] == "*":
            return entry is not None
        with self._pool_lock(entry["language"]), self._pool_lock("*"):
            moved = self.db.lobby.update_one({"_id": user_id, "language": entry["language"]},
                                             {"$set": {"language": "*"}})
        return bool(moved.modified_count)

    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_language_offers``: one conditional update per user."""
        claimed: list[tuple[int, str]] = []
        while len(claimed) < limit:
            entry = self.db.lobby.find_one_and_update(
                {"since": {"$lt": waiting_before}, "language": {"$ne": "*"},
                 "offered": {"$ne": True}}, {"$set": {"offered": True}},
                projection={"language": 1}, sort=[("since", 1)])
            if entry is None:
                break
            claimed.append((int(entry["_id"]), str(entry["language"])))
        return claimed

    def _resumed_chat(self, doc: Mapping[str, Any], update_id: int) -> MatchResult | None:
        chat = docs.active_chat(doc)
        if chat is None:
            return None
        opened = self.db.chats.find_one({"_id": chat.chat_id}, {"opened_by_update": 1})
        return matching.resume_search(chat, (opened or {}).get("opened_by_update"), update_id)

    def leave_lobby(self, user_id: int) -> bool:
        """See ``Repository.leave_lobby``."""
        doc = self.db.users.find_one({"_id": user_id}, {"language": 1})
        return doc is not None and self._leave_lobby(user_id, doc["language"])

    def _leave_lobby(self, user_id: int, language: str) -> bool:
        with self._pool_lock(self._pool_of(user_id, language)):
            left = bool(self.db.lobby.delete_one({"_id": user_id}).deleted_count)
            self.db.users.update_one({"_id": user_id, "chat": None},
                                     {"$set": {"waiting_since": None}})
        return left

    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``: the chat document's null ``ended_at`` is won once."""
        doc = self.db.users.find_one({"_id": user_id}, {"chat": 1})
        chat = (doc or {}).get("chat")
        if chat and reason is EndReason.NEXT:  # only a /next asks who opened the chat
            opened = self.db.chats.find_one({"_id": chat["id"], "ended_at": None},
                                            {"opened_by_update": 1}) or {}
            if not matching.may_end(reason, opened.get("opened_by_update"), update_id):
                chat = None  # this update opened it: a re-delivered /next resumes instead
        if chat:
            ended = self.db.chats.find_one_and_update(
                {"_id": chat["id"], "ended_at": None},
                {"$set": docs.ended_fields(user_id, reason, now, update_id,
                                           docs.utc(now) + self._chat_retention)},
                projection={"users": 1})
            if ended is None:
                # The partner ended it first; tidy our side if they have not yet.
                closed = self.db.chats.find_one({"_id": chat["id"]}, {"closed_by_update": 1})
                self._clear_chat(chat["id"], [user_id, int(chat["partner"])])
                if closed is None or closed.get("closed_by_update") != update_id:
                    return None
                return EndedChat(int(chat["id"]), int(chat["partner"]),
                                 self._language(int(chat["partner"])), resumed=True)
            self._clear_chat(chat["id"], ended["users"])
            partner_id = int(chat["partner"])
            return EndedChat(int(chat["id"]), partner_id, self._language(partner_id),
                             resumed=False)
        earlier = self.db.chats.find_one({"closed_by_update": update_id, "users": user_id},
                                         {"users": 1})
        if earlier is None:
            return None
        partner_id = next(int(u) for u in earlier["users"] if u != user_id)
        return EndedChat(int(earlier["_id"]), partner_id, self._language(partner_id), True)

    def _clear_chat(self, chat_id: int, users: list[int]) -> None:
        self.db.users.update_many({"_id": {"$in": users}, "chat.id": chat_id},
                                  {"$set": {"chat": None}})

    def _language(self, user_id: int) -> str:
        doc = self.db.users.find_one({"_id": user_id}, {"language": 1})
        return str(doc["language"]) if doc else "en"

    # -- message links -------------------------------------------------------------------

    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``: one upsert, expiring after the retention."""
        self.db.message_links.replace_one(
            {"_id": f"{link.sender_id}:{link.sender_message_id}"},
            docs.link_document(link, docs.utc(link.sent_at) + self._message_retention),
            upsert=True)

    def change_album(self, key: str, rule: Callable[[Album | None], tuple[Album | None, T]]
                     ) -> T:
        """See ``Repository.change_album``: written only if its version is still the one read."""
        while True:  # another instance's write in between: read and decide again
            doc = self.db.albums.find_one({"_id": key})
            album, answer = rule(None if doc is None else docs.album(key, doc))
            if album is None:
                return answer
            new = docs.album_document(album, docs.utc(albums.expires_at(album)))
            with contextlib.suppress(DuplicateKeyError):
                if doc is None:
                    self.db.albums.insert_one({"_id": key, **new})
                    return answer
                if self.db.albums.replace_one({"_id": key, "version": doc["version"]},
                                              new).matched_count:
                    return answer

    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``."""
        doc = self.db.message_links.find_one(
            {"$or": [{"_id": f"{user_id}:{message_id}"},
                     {"recipient_id": user_id, "copy_message_id": message_id}],
             "chat_id": chat_id})
        return None if doc is None else docs.message_link(doc)

    # -- statistics ----------------------------------------------------------------------

    def counts(self, user_id: int) -> Counts:
        """See ``Repository.counts``."""
        db = self.db
        return Counts(
            users=db.users.estimated_document_count(),
            active_chats=db.chats.count_documents({"ended_at": None}),
            previous_chats=db.chats.count_documents({"ended_at": {"$ne": None}}),
            my_previous_chats=db.chats.count_documents(
                {"users": user_id, "ended_at": {"$ne": None}}),
            waiting=db.lobby.estimated_document_count(),
        )
