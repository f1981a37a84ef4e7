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
import functools
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    WriteConcernError,
    WTimeoutError,
)

from messagine.flood import FloodRule
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
from messagine.storage.port import StorageUnavailable

P = ParamSpec("P")
R = TypeVar("R")

# How many recent update ids a user document keeps for de-duplication. Telegram delivers
# one update of a chat at a time and re-sends that one until it succeeds, so a re-delivery
# is always among the newest few.
_RECENT_UPDATES = 50
_SCHEMA_VERSION = 6
_LOCK_LEASE_S = 5.0
_LOCK_WAIT_S = 8.0
_UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError, WriteConcernError)


# Server errors that mean "not now" (a failover, a shutdown, a timeout, a write conflict):
# https://www.mongodb.com/docs/manual/reference/error-codes/
_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602,
                              13435, 13436})


def _transient(error: OperationFailure) -> bool:
    return error.code in _TRANSIENT_CODES or error.has_error_label("RetryableWriteError") \
        or error.has_error_label("TransientTransactionError")


def _unavailable_as_storage_error(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except _UNAVAILABLE as error:
            raise StorageUnavailable(f"mongo: {type(error).__name__}") from None
        except OperationFailure as error:
            if _transient(error):
                raise StorageUnavailable(f"mongo: {type(error).__name__} {error.code}") \
                    from None
            raise

    return wrapper


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _delete_some(collection: Any, query: dict[str, Any], limit: int) -> int:
    """Delete at most ``limit`` documents matching ``query``; how many went."""
    ids = [doc["_id"] for doc in collection.find(query, {"_id": 1}).limit(limit)]
    if not ids:
        return 0
    return int(collection.delete_many({"_id": {"$in": ids}, **query}).deleted_count)


class MongoRepository:
    """The repository port on a MongoDB database (Atlas in production)."""

    backend = "mongo"

    def __init__(
        self, uri: str, database: str = "messagine", *, message_retention_days: int = 30,
        chat_retention_days: int = 180, update_retention_s: int = 86_400,
        client_factory: Callable[..., Any] | None = None, flood_rule: FloodRule | None = None,
    ) -> None:
        self._flood_rule = flood_rule or FloodRule()
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
            if marker is None or marker.get("version") != _SCHEMA_VERSION:
                self.init_schema()
            self._indexes_ready = True
        return db

    def _connect(self) -> Any:
        if self._db is None:
            with self._lock:
                if self._db is None:
                    # Cloud Functions: a request must answer well inside Telegram's 60 s, so
                    # every wait is short (a stalled primary costs at most ~5 s, then 503);
                    # an instance serves a few concurrent requests, so a small pool suffices,
                    # and idle connections are dropped before the instance is frozen long.
                    self._client = self._client_factory(
                        self._uri, appname="messagine", retryWrites=True, retryReads=True,
                        serverSelectionTimeoutMS=5_000, connectTimeoutMS=3_000,
                        socketTimeoutMS=10_000, maxPoolSize=10, maxIdleTimeMS=60_000,
                        tz_aware=True,
                    )
                    self._db = self._client[self._database_name]
        return self._db

    def close(self) -> None:
        """Close the client (tests; an instance keeps it for its life)."""
        if self._client is not None:
            self._client.close()
            self._client = None
            self._db = None
            self._indexes_ready = False

    @_unavailable_as_storage_error
    def init_schema(self) -> None:
        """Create every index, idempotently (``python -m messagine init-db``, and first use)."""
        db = self._connect()
        db.users.create_index("recent_updates", name="users_by_recent_update")
        db.lobby.create_index([("language", 1), ("since", 1)], name="lobby_by_language")
        db.chats.create_index([("users", 1), ("started_at", -1)], name="chats_by_user")
        db.chats.create_index("ended_at", name="chats_by_end")
        db.chats.create_index("closed_by_update", name="chats_by_closing_update",
                              sparse=True)
        db.exclusions.create_index("other_id", name="exclusions_by_other")
        db.exclusions.create_index("user_id", name="exclusions_by_user")
        db.message_links.create_index(
            [("recipient_id", 1), ("copy_message_id", 1)], name="links_by_copy")
        db.message_links.create_index("expires_at", name="links_ttl", expireAfterSeconds=0)
        db.message_links.create_index("chat_id", name="links_by_chat")
        db.message_links.create_index("sender_id", name="links_by_sender")
        db.chats.create_index("expires_at", name="chats_ttl", expireAfterSeconds=0)
        db.chats.create_index("started_at", name="chats_by_start")
        db.reports.create_index("created_at", name="reports_by_time")
        db.reports.create_index("reporter_id", name="reports_by_reporter")
        db.users.create_index([("nudge_pending", 1), ("last_seen", 1)], name="users_due_for_nudge")
        db.lobby.create_index("since", name="lobby_by_since")
        db.claimed_updates.create_index(
            "claimed_at", name="claims_ttl", expireAfterSeconds=self._update_retention_s)
        db.meta.replace_one({"_id": "schema"}, {"version": _SCHEMA_VERSION}, upsert=True)
        self._indexes_ready = True

    # -- reading state -------------------------------------------------------------------

    @staticmethod
    def _state(doc: Mapping[str, Any], *, is_new: bool = False) -> UserState:
        chat = doc.get("chat")
        active = None
        if chat:
            active = ActiveChat(int(chat["id"]), int(chat["partner"]),
                                str(chat["partner_language"]), float(chat["started_at"]))
        return UserState(
            user_id=int(doc["_id"]), language=str(doc["language"]), is_new=is_new,
            blocked=bool(doc.get("blocked")), banned=bool(doc.get("banned")), chat=active,
            waiting_since=doc.get("waiting_since"),
            analytics_opt_out=bool(doc.get("analytics_opt_out")),
            age_confirmed=doc.get("age_answer") == "yes",
            language_code=doc.get("language_code"),
        )

    @_unavailable_as_storage_error
    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        return self._state(doc) if doc else None

    # -- updates and users ---------------------------------------------------------------

    @_unavailable_as_storage_error
    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: one command for claim, profile, flood and state."""
        if profile is None:
            try:
                self.db.claimed_updates.insert_one(
                    {"_id": update_id, "claimed_at": datetime.now(UTC)})
            except DuplicateKeyError:
                return OpenedUpdate(duplicate=True)
            return OpenedUpdate(duplicate=False)
        try:
            doc = self.db.users.find_one_and_update(
                {"_id": profile.user_id, "recent_updates": {"$ne": update_id}},
                _open_update_pipeline(update_id, profile, default_language, now, album,
                                      self._flood_rule),
                projection={"recent_updates": 0}, upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return OpenedUpdate(duplicate=True)
        return OpenedUpdate(duplicate=False, user=self._state(doc, is_new=doc["created_now"]),
                            throttled=bool(doc["f_throttled"]), warn=bool(doc["f_warn"]))

    @_unavailable_as_storage_error
    def release_update(self, update_id: int) -> None:
        """See ``Repository.release_update``."""
        self.db.users.update_one({"recent_updates": update_id},
                                 {"$pull": {"recent_updates": update_id}})
        self.db.claimed_updates.delete_one({"_id": update_id})

    @_unavailable_as_storage_error
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

    @_unavailable_as_storage_error
    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        doc = self.db.users.find_one_and_update(
            {"_id": user_id}, {"$set": {"blocked": blocked}}, projection={"language": 1})
        if blocked and doc is not None:
            self._leave_lobby(user_id, doc["language"])

    @_unavailable_as_storage_error
    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"analytics_opt_out": opt_out}})

    @_unavailable_as_storage_error
    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {
            "age_answer": "yes" if confirmed else "no", "age_answered_at": now}})

    @_unavailable_as_storage_error
    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        if doc is None:
            return None
        profile = {("id" if key == "_id" else key): value for key, value in doc.items()}
        lobby = self.db.lobby.find_one({"_id": user_id}, {"language": 1, "since": 1})
        profile["lobby"] = ({"language": lobby["language"], "since": lobby["since"]}
                            if lobby else None)
        chats = [ChatRecord(
            int(c["_id"]), next((int(u) for u in c["users"] if u != user_id), 0),
            c["language"], c["started_at"], c.get("ended_at"), c.get("end_reason"),
            None if c.get("ended_by") is None else c["ended_by"] == user_id)
            for c in self.db.chats.find({"users": user_id}).sort(
                [("started_at", 1), ("opened_by_update", 1)])]
        messages = [MessageLink(d["chat_id"], d["sender_id"], d["sender_message_id"],
                                d["recipient_id"], d["copy_message_id"], d["content_type"],
                                d["sent_at"])
                    for d in self.db.message_links.find({"sender_id": user_id}).sort(
                        "sent_at", 1)]
        exclusions = [(int(e["other_id"]), e["reason"], e["created_at"])
                      for e in self.db.exclusions.find({"user_id": user_id})]
        reports = [(int(r["reported_id"]), r["reason"], r["created_at"], r["status"])
                   for r in self.db.reports.find({"reporter_id": user_id}).sort("created_at", 1)]
        return UserRecords(profile, chats, messages, exclusions, reports)

    @_unavailable_as_storage_error
    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``; each chat gets its own random tombstone id."""
        db = self.db
        counts = {
            "messages": db.message_links.delete_many(
                {"$or": [{"sender_id": user_id}, {"recipient_id": user_id}]}).deleted_count,
            "exclusions": db.exclusions.delete_many(
                {"$or": [{"user_id": user_id}, {"other_id": user_id}]}).deleted_count,
            "lobby": db.lobby.delete_many({"_id": user_id}).deleted_count,
            "chats_anonymised": 0,
        }
        for chat in db.chats.find({"users": user_id}, {"users": 1, "ended_by": 1}):
            tombstone = -secrets.randbits(62) - 1
            update: dict[str, Any] = {
                "users": [tombstone if u == user_id else u for u in chat["users"]]}
            if chat.get("ended_by") == user_id:
                update["ended_by"] = tombstone
            db.chats.update_one({"_id": chat["_id"]}, {"$set": update})
            counts["chats_anonymised"] += 1
        db.users.update_many({"chat.partner": user_id}, {"$set": {"chat": None}})
        for report in db.reports.find({"reporter_id": user_id}, {"_id": 1}):
            db.reports.update_one({"_id": report["_id"]},
                                  {"$set": {"reporter_id": -secrets.randbits(62) - 1}})
        # A ban outlives erasure, or /deleteme would lift it: the document keeps only the
        # id and the ban. Reports about the user stay too (the policy says why).
        counts["kept_for_ban"] = db.users.replace_one(
            {"_id": user_id, "banned": True},
            {"banned": True, "blocked": False, "language": "en", "chat": None,
             "waiting_since": None, "first_name": "", "first_seen": 0.0, "last_seen": 0.0}
        ).modified_count
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
                                   {"claimed_at": {"$lt": _utc(now - retention.claims_s)}},
                                   limit),
            "chats": _delete_some(self.db.chats,
                                  {"ended_at": {"$lt": now - retention.chats_s}}, limit),
        }

    @_unavailable_as_storage_error
    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        found = list(self.db.chats.find({"users": user_id}).sort(
            [("started_at", -1), ("opened_by_update", -1)]).limit(1))
        if not found:
            return None
        chat = found[0]
        return ChatRecord(int(chat["_id"]), next(int(u) for u in chat["users"] if u != user_id),
                          chat["language"], chat["started_at"], chat.get("ended_at"),
                          chat.get("end_reason"),
                          None if chat.get("ended_by") is None else chat["ended_by"] == user_id)

    @_unavailable_as_storage_error
    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        docs = self.db.message_links.find(
            {"chat_id": chat_id, "sender_id": sender_id}, {"sender_message_id": 1}).sort(
            "sender_message_id", -1).limit(limit)
        return sorted(int(d["sender_message_id"]) for d in docs)

    @_unavailable_as_storage_error
    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float) -> Report:
        """See ``Repository.add_report``; ids are random, so no counter document is hot."""
        report = Report(secrets.randbelow(10**9) + 1, reporter_id, reported_id, chat_id, reason,
                        now, "open")
        self.db.reports.insert_one({
            "_id": report.report_id, "reporter_id": reporter_id, "reported_id": reported_id,
            "chat_id": chat_id, "reason": reason, "created_at": now, "status": "open"})
        return report

    @_unavailable_as_storage_error
    def resolve_report(self, report_id: int, status: str) -> Report | None:
        """See ``Repository.resolve_report``: the open -> status change is won once."""
        doc = self.db.reports.find_one_and_update(
            {"_id": report_id, "status": "open"}, {"$set": {"status": status}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            return None
        return Report(int(doc["_id"]), doc["reporter_id"], doc["reported_id"], doc["chat_id"],
                      doc["reason"], doc["created_at"], doc["status"])

    @_unavailable_as_storage_error
    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        doc = self.db.users.find_one_and_update(
            {"_id": user_id}, {"$set": {"banned": banned}}, projection={"language": 1})
        if doc is None:
            return False
        if banned:
            self._leave_lobby(user_id, doc["language"])
        return True

    @_unavailable_as_storage_error
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

    @_unavailable_as_storage_error
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
            state = ("chatting" if doc.get("chat") else
                     "waiting" if doc.get("waiting_since") is not None else "idle")
            claimed.append(Nudge(int(doc["_id"]), doc["language"], state))
        return claimed

    @_unavailable_as_storage_error
    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"nudge_pending": True}})

    @_unavailable_as_storage_error
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

    @_unavailable_as_storage_error
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

    @_unavailable_as_storage_error
    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        self.db.users.update_one({"_id": user_id}, {"$set": {"reminders_off": not enabled}})

    @_unavailable_as_storage_error
    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        counts: dict[int, int] = {}
        for doc in self.db.message_links.find({"chat_id": chat_id}, {"sender_id": 1}):
            counts[int(doc["sender_id"])] = counts.get(int(doc["sender_id"]), 0) + 1
        return counts

    @_unavailable_as_storage_error
    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float) -> None:
        """See ``Repository.exclude_pair``; waiting entries learn of it at once."""
        self.db.exclusions.update_one(
            {"_id": f"{user_id}:{other_id}"},
            {"$setOnInsert": {"user_id": user_id, "other_id": other_id, "reason": reason,
                              "created_at": now}}, upsert=True)
        self.db.lobby.update_one({"_id": user_id}, {"$addToSet": {"avoid": other_id}})
        self.db.lobby.update_one({"_id": other_id}, {"$addToSet": {"avoid": user_id}})

    # -- the pool lock -------------------------------------------------------------------

    def _pool_lock(self, language: str) -> _PoolLock:
        return _PoolLock(self, f"lobby:{language}")

    def _avoided_by(self, user_id: int, recent_partners: int) -> list[int]:
        """The user's recent partners and everyone excluded in either direction."""
        avoid: set[int] = set()
        if recent_partners > 0:
            for chat in self.db.chats.find({"users": user_id}, {"users": 1}).sort(
                    "started_at", -1).limit(recent_partners):
                avoid.update(u for u in chat["users"] if u != user_id)
        for row in self.db.exclusions.find(
                {"$or": [{"user_id": user_id}, {"other_id": user_id}]},
                {"user_id": 1, "other_id": 1}):
            avoid.update((row["user_id"], row["other_id"]))
        avoid.discard(user_id)
        return sorted(avoid)

    def _apply_pairing(self, intent: Mapping[str, Any]) -> None:
        """Write a pairing; every step is idempotent, so a crashed one is rolled forward."""
        a, b, chat_id = intent["searcher"], intent["partner"], intent["chat_id"]
        with_chat = {"_id": chat_id, "users": [b, a], "language": intent["language"],
                     "started_at": intent["started_at"], "opened_by_update": intent["update_id"],
                     "ended_at": None, "ended_by": None, "end_reason": None,
                     "closed_by_update": None}
        with contextlib.suppress(DuplicateKeyError):  # written before the instance died
            self.db.chats.insert_one(with_chat)
        for user, partner, partner_language in (
                (a, b, intent["partner_language"]), (b, a, intent["language_of_searcher"])):
            self.db.users.update_one(
                {"_id": user, "chat": None},
                {"$set": {"chat": {"id": chat_id, "partner": partner,
                                   "partner_language": partner_language,
                                   "started_at": intent["started_at"]},
                          "waiting_since": None}})
        self.db.lobby.delete_many({"_id": {"$in": [a, b]}})

    # -- lobby and chats -----------------------------------------------------------------

    @_unavailable_as_storage_error
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
            resumed = self._resumed_chat(doc, update_id)
            if resumed is not None:
                return resumed
            avoid = self._avoided_by(user_id, recent_partners)
            candidate = self.db.lobby.find_one(
                {"language": language, "_id": {"$nin": [user_id, *avoid]},
                 "avoid": {"$ne": user_id}},
                sort=[("since", 1), ("_id", 1)])
            if candidate is None:
                was_waiting = doc.get("waiting_since") is not None
                self.db.lobby.update_one(
                    {"_id": user_id},
                    {"$setOnInsert": {"language": language, "since": now},
                     "$set": {"avoid": avoid}}, upsert=True)
                if not was_waiting:
                    self.db.users.update_one({"_id": user_id}, {"$set": {"waiting_since": now}})
                waiting = self.db.lobby.count_documents({"language": language})
                outcome = MatchOutcome.ALREADY_WAITING if was_waiting else MatchOutcome.WAITING
                return MatchResult(outcome, waiting_count=waiting)
            partner = self.db.users.find_one({"_id": candidate["_id"]}, {"language": 1})
            intent = {"searcher": user_id, "partner": candidate["_id"],
                      "chat_id": secrets.randbits(62), "language": language,
                      "language_of_searcher": doc["language"],
                      "partner_language": partner["language"] if partner else language,
                      "started_at": now, "update_id": update_id}
            lock.record_intent(intent)
            self._apply_pairing(intent)
            lock.clear_intent()
        return MatchResult(MatchOutcome.MATCHED, ActiveChat(
            intent["chat_id"], intent["partner"], intent["partner_language"], now),
            partner_waiting_since=candidate.get("since"))

    def _pool_of(self, user_id: int, language: str) -> str:
        """The pool the user waits in: their lobby entry's, else their language's."""
        entry = self.db.lobby.find_one({"_id": user_id}, {"language": 1})
        return str(entry["language"]) if entry else language

    @_unavailable_as_storage_error
    def join_any_language(self, user_id: int) -> bool:
        """See ``Repository.join_any_language``: under the leases of both pools."""
        entry = self.db.lobby.find_one({"_id": user_id}, {"language": 1})
        if entry is None or entry["language"] == "*":
            return entry is not None
        with self._pool_lock(entry["language"]), self._pool_lock("*"):
            moved = self.db.lobby.update_one({"_id": user_id, "language": entry["language"]},
                                             {"$set": {"language": "*"}})
        return bool(moved.modified_count)

    @_unavailable_as_storage_error
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
        chat = doc.get("chat")
        if not chat:
            return None
        state = self._state(doc)
        assert state.chat is not None  # noqa: S101 - set when doc["chat"] is
        opened = self.db.chats.find_one({"_id": chat["id"]}, {"opened_by_update": 1})
        if opened is not None and opened.get("opened_by_update") == update_id:
            return MatchResult(MatchOutcome.MATCHED, state.chat, resumed=True)
        return MatchResult(MatchOutcome.IN_CHAT, state.chat)

    @_unavailable_as_storage_error
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

    @_unavailable_as_storage_error
    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``: the chat document's null ``ended_at`` is won once."""
        doc = self.db.users.find_one({"_id": user_id}, {"chat": 1})
        chat = (doc or {}).get("chat")
        if chat and reason is EndReason.NEXT and self.db.chats.find_one(
                {"_id": chat["id"], "ended_at": None, "opened_by_update": update_id},
                {"_id": 1}) is not None:
            chat = None  # this update opened it: a re-delivered /next resumes instead
        if chat:
            ended = self.db.chats.find_one_and_update(
                {"_id": chat["id"], "ended_at": None},
                {"$set": {"ended_at": now, "ended_by": user_id, "end_reason": reason.value,
                          "closed_by_update": update_id,
                          "expires_at": _utc(now) + self._chat_retention}},
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

    @_unavailable_as_storage_error
    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``: one upsert, expiring after the retention."""
        self.db.message_links.replace_one(
            {"_id": f"{link.sender_id}:{link.sender_message_id}"},
            {"chat_id": link.chat_id, "sender_id": link.sender_id,
             "sender_message_id": link.sender_message_id, "recipient_id": link.recipient_id,
             "copy_message_id": link.copy_message_id, "content_type": link.content_type,
             "sent_at": link.sent_at,
             "expires_at": _utc(link.sent_at) + self._message_retention},
            upsert=True)

    @_unavailable_as_storage_error
    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``."""
        doc = self.db.message_links.find_one(
            {"$or": [{"_id": f"{user_id}:{message_id}"},
                     {"recipient_id": user_id, "copy_message_id": message_id}],
             "chat_id": chat_id})
        if doc is None:
            return None
        return MessageLink(doc["chat_id"], doc["sender_id"], doc["sender_message_id"],
                           doc["recipient_id"], doc["copy_message_id"], doc["content_type"],
                           doc["sent_at"])

    # -- statistics ----------------------------------------------------------------------

    @_unavailable_as_storage_error
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


def _if_null(field_name: str, default: Any) -> dict[str, Any]:
    return {"$ifNull": ["$" + field_name, default]}


def _is_false(expression: Any) -> dict[str, Any]:
    return {"$eq": [expression, False]}  # mongoeco has no $not


def _open_update_pipeline(
    update_id: int, profile: Profile, default_language: str, now: float, album: str | None,
    rule: FloodRule,
) -> list[dict[str, Any]]:
    """Claim, profile refresh, user creation and ``flood.admit``, as one document write.

    Each $set stage sees the fields the previous one wrote; ``tests/test_flood.py`` checks
    that this agrees with the Python rule step by step.
    """
    not_cooling = _is_false("$_cool")
    return [
        {"$set": {
            "created_now": {"$eq": [{"$type": "$first_seen"}, "missing"]},
            "_cool": {"$gt": [_if_null("f_cooldown", 0.0), now]},
            "_newwin": {"$gte": [{"$subtract": [now, _if_null("f_start", 0.0)]},
                                 rule.window_s]},
        }},
        {"$set": {"_album": {"$and": [album is not None,
                                      {"$eq": [_if_null("f_album", None), album]},
                                      _is_false("$_newwin")]}}},
        {"$set": {
            "f_count": {"$cond": ["$_cool", _if_null("f_count", 0), {"$cond": [
                "$_newwin", 1,
                {"$add": [_if_null("f_count", 0), {"$cond": ["$_album", 0, 1]}]}]}]},
            "f_start": {"$cond": [{"$and": [not_cooling, "$_newwin"]}, now,
                                  _if_null("f_start", 0.0)]},
            "f_warned": {"$cond": [{"$and": [not_cooling, "$_newwin"]}, False,
                                   _if_null("f_warned", False)]},
            "f_album": {"$cond": ["$_cool", _if_null("f_album", None), album]},
        }},
        {"$set": {"_over": {"$and": [not_cooling, {"$gt": ["$f_count", rule.limit]}]}}},
        {"$set": {"_strike": {"$and": ["$_over", _is_false("$f_warned")]}}},
        {"$set": {
            "f_throttled": {"$or": ["$_cool", "$_over"]},
            "f_warn": "$_strike",
            "f_strikes": {"$cond": ["$_strike", {"$add": [{"$cond": [
                {"$gt": [{"$subtract": [now, _if_null("f_last_strike", 0.0)]},
                         rule.strikes_forgotten_after_s]},
                0, _if_null("f_strikes", 0)]}, 1]}, _if_null("f_strikes", 0)]},
            "f_last_strike": {"$cond": ["$_strike", now, _if_null("f_last_strike", 0.0)]},
            "f_warned": {"$or": ["$f_warned", "$_strike"]},
        }},
        {"$set": {
            "f_cooldown": {"$cond": ["$_strike", {"$add": [now, {"$min": [
                rule.max_cooldown_s, {"$multiply": [rule.first_cooldown_s, {"$pow": [
                    2, {"$subtract": ["$f_strikes", 1]}]}]}]}]}, _if_null("f_cooldown", 0.0)]},
            "first_name": {"$literal": profile.first_name},
            "last_name": {"$literal": profile.last_name},
            "username": {"$literal": profile.username},
            "language_code": {"$literal": profile.language_code},
            "last_seen": now,
            "nudge_pending": True,
            "first_seen": _if_null("first_seen", now),
            "language": _if_null("language", default_language),
            "blocked": _if_null("blocked", False),
            "banned": _if_null("banned", False),
            "chat": _if_null("chat", None),
            "waiting_since": _if_null("waiting_since", None),
            "recent_updates": {"$slice": [{"$concatArrays": [
                _if_null("recent_updates", []), [update_id]]}, -_RECENT_UPDATES]},
        }},
        {"$unset": ["_cool", "_newwin", "_album", "_over", "_strike"]},
    ]


class _PoolLock:
    """A lease on one language pool: held for a few commands, expiring if its holder dies."""

    def __init__(self, repository: MongoRepository, key: str) -> None:
        self._repository = repository
        self._key = key
        self._token = secrets.token_hex(8)

    def __enter__(self) -> _PoolLock:
        locks = self._repository.db.locks
        deadline = time.monotonic() + _LOCK_WAIT_S
        pause = 0.002
        while True:
            now = time.time()
            try:
                held = locks.find_one_and_update(
                    {"_id": self._key, "until": {"$lt": now}},
                    {"$set": {"holder": self._token, "until": now + _LOCK_LEASE_S}},
                    upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                held = None  # another instance holds the lease
            if held is not None:
                if held.get("intent"):
                    # The previous holder died half way through a pairing: finish it.
                    self._repository._apply_pairing(held["intent"])
                    self.clear_intent()
                return self
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"mongo: {self._key} stayed locked")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def record_intent(self, intent: Mapping[str, Any]) -> None:
        self._repository.db.locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$set": {"intent": dict(intent)}})

    def clear_intent(self) -> None:
        self._repository.db.locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$unset": {"intent": ""}})

    def __exit__(self, *exc: object) -> None:
        self._repository.db.locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$set": {"until": 0.0}})
