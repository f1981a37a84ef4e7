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
  next holder rolls forward if the instance died half way, and a pairing that finds one of
  its users taken by another (a holder stalled past its lease) is undone;
- a chat ends when its document's ``ended_at`` goes from null to a time, which only one
  of two concurrent callers can do.

docs/storage.md argues each operation in full. pymongo is imported only here.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from messagine.domain import age_gate, albums, matching
from messagine.domain.age_gate import stores_profile
from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S, Claim, ClaimState, Decision, decide
from messagine.domain.erasure import (
    UNCONFIGURED_PEPPER,
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.retention import Cutoffs
from messagine.models import (
    ActiveChat,
    EndedChat,
    EndReason,
    MatchOutcome,
    MatchResult,
    MessageLink,
    Nudge,
    OpenedUpdate,
    Profile,
    Report,
    Retention,
    UserState,
)
from messagine.storage import documents as docs
from messagine.storage.mongo_client import SCHEMA_VERSION, connect, create_indexes
from messagine.storage.mongo_client import (
    unavailable_as_storage_error as _unavailable_as_storage_error,
)
from messagine.storage.mongo_lease import PoolLease
from messagine.storage.mongo_pipeline import open_update_pipeline
from messagine.storage.port import StorageUnavailable, wrap_public_methods
from messagine.storage.shared import DocumentOperations

_ATTEMPTS = 8  # a guarded change beaten by another write is decided again this many times
_OPERATORS = {"!=": "$ne", "<": "$lt", ">=": "$gte"}


_DATETIMES = frozenset({"claimed_at"})
"""Fields kept as datetimes here, for their TTL index; the filters give them in seconds."""


def _match(filters: Iterable[docs.Filter]) -> dict[str, Any]:
    """``filters`` as a MongoDB query ("==" and "array_contains" are plain equality here)."""
    query: dict[str, Any] = {}
    for name, operator, value in filters:
        bound = docs.utc(value) if name in _DATETIMES else value
        query[name] = {_OPERATORS[operator]: bound} if operator in _OPERATORS else bound
    return query


def _claim_each(collection: Any, query: dict[str, Any], claimed: dict[str, Any], limit: int,
                **options: Any) -> list[dict[str, Any]]:
    """Set ``claimed`` in up to ``limit`` documents matching ``query``, one at a time.

    A failure after the first returns those claimed so far: the caller acts on them (or
    gives them back), and meets the failure on its next call.
    """
    found: list[dict[str, Any]] = []
    try:
        while len(found) < limit and (doc := collection.find_one_and_update(
                query, {"$set": claimed}, **options)) is not None:
            found.append(doc)
    except PyMongoError:
        if not found:
            raise
    return found


def _delete_some(collection: Any, query: dict[str, Any], limit: int) -> int:
    """Delete at most ``limit`` documents matching ``query``; how many went."""
    ids = [doc["_id"] for doc in collection.find(query, {"_id": 1}).limit(limit)]
    if not ids:
        return 0
    return int(collection.delete_many({"_id": {"$in": ids}, **query}).deleted_count)


T = TypeVar("T")


@wrap_public_methods(_unavailable_as_storage_error)
class MongoRepository(DocumentOperations):
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
            return OpenedUpdate(duplicate=not self._create(
                "claimed_updates", update_id, {"claimed_at": datetime.now(UTC)}))
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
        if doc and doc.get("banned"):
            return self._claimed_alone(update_id, profile.user_id, doc, now)
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
            return docs.user_state(user_id, doc)
        waiting, entry = doc.get("waiting_since") is not None, None
        if waiting:
            with self._pool_lock(self._pool_of(user_id, doc["language"])):
                entry = self.db.lobby.find_one_and_delete({"_id": user_id})
        with self._pool_lock(language) if waiting else contextlib.nullcontext():
            doc = self.db.users.find_one_and_update(
                {"_id": user_id, "chat": None}, {"$set": {"language": language}},
                projection={"recent_updates": 0}, return_document=ReturnDocument.AFTER)
            if doc is not None and entry is not None:
                entry["language"] = language
                self.db.lobby.replace_one({"_id": user_id}, entry, upsert=True)
        return docs.user_state(user_id, doc or self.db.users.find_one({"_id": user_id}))

    def _set_fields(self, user_id: int, fields: Mapping[str, Any], *,
                    leave_lobby: bool = False) -> tuple[bool, bool]:
        """Set fields of the user, and leave the lobby if asked; whether user and entry were."""
        doc = self.db.users.find_one_and_update(
            {"_id": user_id}, {"$set": dict(fields)}, projection={"language": 1})
        return doc is not None, leave_lobby and doc is not None and self._leave_lobby(
            user_id, doc["language"])

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        answer = {"age_answer": age_gate.answer(confirmed), "age_answered_at": now}
        marker = docs.refusal_marker_document(user_id, now).items()  # if erased meanwhile
        self.db.users.update_one(
            {"_id": user_id, "age_answer": {"$nin": list(age_gate.kept_answers(confirmed))}},
            {"$set": answer, "$setOnInsert": {k: v for k, v in marker if k not in answer}},
            upsert=not confirmed)

    def _erase_profile(self, user_id: int, finishing: bool = False) -> dict[str, int] | None:
        # A ban outlives erasure (domain.erasure): only the banned remnant stays; an age
        # refusal only its marker. Replaced only if ban and answer are still as read. The
        # lobby entry read first goes: not one the user made coming back meanwhile.
        entry = self.db.lobby.find_one({"_id": user_id}, {"since": 1})
        for _ in range(_ATTEMPTS):
            doc = self.db.users.find_one({"_id": user_id}, {"banned": 1, "age_answer": 1,
                                                            "age_answered_at": 1})
            if finishing and docs.came_back(doc):
                return None  # back since the erasure was cut short: their account stays
            kept = docs.kept_profile(user_id, doc)
            guard = {"_id": user_id, "banned": (doc or {}).get("banned"),
                     "age_answer": (doc or {}).get("age_answer")}
            done = (self.db.users.replace_one(guard, kept).matched_count if kept is not None
                    else doc is None or self.db.users.delete_one(guard).deleted_count)
            if done:
                banned, lobby = bool((doc or {}).get("banned")), self.db.lobby.delete_one(
                    {"_id": user_id, "since": entry["since"]}).deleted_count if entry else 0
                return {"lobby": lobby, "kept_for_ban": int(banned),
                        "profile": int(doc is not None and not banned)}
        raise StorageUnavailable(f"mongo: users {user_id} kept changing")

    def _delete_where(self, collection: str, condition: docs.Filter) -> int:
        return int(self.db[collection].delete_many(_match((condition,))).deleted_count)

    def _change(self, collection: str, key: Any, reads: tuple[str, ...],
                change: Callable[[dict[str, Any]], Mapping[str, Any] | None]
                ) -> dict[str, Any] | None:
        """Written by one update whose filter holds the ``reads`` fields as read."""
        for _ in range(_ATTEMPTS):  # another write in between: read and decide again
            doc = self.db[collection].find_one({"_id": key})
            if doc is None or (fields := change(doc)) is None:
                return None
            guard = {name: doc.get(name) for name in reads}
            if self.db[collection].update_one({"_id": key, **guard},
                                              {"$set": dict(fields)}).matched_count:
                return {**doc, **fields}
        raise StorageUnavailable(f"mongo: {collection} {key} kept changing")

    def _create(self, collection: str, key: Any, doc: Mapping[str, Any]) -> bool:
        try:
            self.db[collection].insert_one({"_id": key, **doc})
        except DuplicateKeyError:
            return False
        return True

    def _move(self, collection: str, key: Any, new_key: Any, doc: Mapping[str, Any]) -> None:
        self.db[collection].replace_one({"_id": new_key}, dict(doc), upsert=True)
        self.db[collection].delete_one({"_id": key})

    def _array_change(self, collection: str, key: Any, field: str, value: int, *,
                      add: bool) -> None:
        self.db[collection].update_one({"_id": key},
                                       {"$addToSet" if add else "$pull": {field: value}})

    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``.

        TTL indexes expire the same documents, but the TTL monitor runs only once a
        minute and may fall behind under load; this keeps the published retention.
        """
        return {kind: _delete_some(self.db[collection], _match(filters), limit)
                for kind, collection, filters in docs.expired(now, retention)}

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.idle_chats``: users long unseen in a chat, then their partners."""
        users = self.db.users.find({"chat": {"$ne": None}, "last_seen": {"$lt": cut.active_before}},
                                   {"language": 1, "chat": 1, "last_seen": 1}).sort(
                                       "last_seen", 1).limit(docs.IDLE_SCAN * limit)
        return docs.idle_chats(((int(doc["_id"]), doc) for doc in users), lambda partner: (
            self._document("users", partner) or {}).get("last_seen"), cut, limit)

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_inactivity_notices``: each by one conditional update."""
        return [(int(doc["_id"]), str(doc["language"])) for doc in _claim_each(
            self.db.users, {"notice_pending": {"$ne": False}, "banned": False, "age_answer": {
                "$ne": "no"}, "last_seen": {"$lt": cut.notice_seen_before}},
            {"notice_pending": False, "noticed_at": now}, limit, projection={"language": 1},
            sort=[("last_seen", 1)])]

    def _first(self, collection: str, filters: Iterable[docs.Filter], order: str,
               limit: int) -> Iterator[tuple[Any, dict[str, Any]]]:
        return ((doc["_id"], doc) for doc in self.db[collection].find(_match(filters)).sort(
            order, 1).limit(limit))

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        found = self.db.message_links.find(
            {"chat_id": chat_id, "sender_id": sender_id}, {"sender_message_id": 1}).sort(
            "sender_message_id", -1).limit(limit)
        return sorted(int(d["sender_message_id"]) for d in found)

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """See ``Repository.add_report``: one upsert, once per reporter and chat."""
        report = docs.new_report(reporter_id, reported_id, chat_id, reason, now)
        earlier = self.db.reports.find_one_and_update(
            {"reporter_id": reporter_id, "chat_id": chat_id},
            {"$setOnInsert": {"_id": report.report_id,
                              **docs.report_document(report, reported_key)}},
            projection={"_id": 1}, upsert=True)
        return report if earlier is None else None

    def _count(self, collection: str, filters: tuple[docs.Filter, ...]) -> int:
        """How many documents match; a whole collection's count is the cheap estimate."""
        if not filters:
            return int(self.db[collection].estimated_document_count())
        return int(self.db[collection].count_documents(_match(filters)))

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: each user claimed by one conditional update."""
        return [docs.nudge(int(doc["_id"]), doc) for doc in _claim_each(
            self.db.users, {**_match(docs.nudge_due(idle_before)), "blocked": False,
                            "banned": False, "reminders_off": {"$ne": True}},
            {"nudge_pending": False, "reminded_at": now}, limit,
            projection={"language": 1, "chat": 1, "waiting_since": 1}, sort=[("last_seen", 1)])]

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``: each removal under its pool's lease."""
        expired: list[tuple[int, str]] = []
        for entry in list(self.db.lobby.find({"since": {"$lt": waiting_before}},
                                             {"language": 1}).sort("since", 1).limit(limit)):
            due = {"_id": entry["_id"], "since": {"$lt": waiting_before}}
            with self._pool_lock(entry["language"]):
                # The user's side first: a failure in between leaves the entry, which the
                # next run finds and finishes (the other way round, nothing would).
                if self.db.lobby.find_one(due, {"_id": 1}) is not None:
                    self.db.users.update_one({"_id": entry["_id"], "chat": None},
                                             {"$set": {"waiting_since": None}})
                if self.db.lobby.delete_one(due).deleted_count:
                    expired.append((int(entry["_id"]), entry["language"]))
        return expired

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        return dict(Counter(int(doc["sender_id"]) for doc in self.db.message_links.find(
            {"chat_id": chat_id}, {"sender_id": 1})))

    def _waiting(self) -> list[int]:
        return [int(entry["_id"]) for entry in self.db.lobby.find({}, {"_id": 1})]

    def _any_of(self, collection: str,
                filters: Iterable[docs.Filter]) -> Iterator[tuple[Any, dict[str, Any]]]:
        return ((doc["_id"], doc) for doc in self.db[collection].find(
            {"$or": [_match((condition,)) for condition in filters]}))

    def _document(self, collection: str, key: Any) -> dict[str, Any] | None:
        return self.db[collection].find_one({"_id": key})  # type: ignore[no-any-return]

    def _latest_chats(self, user_id: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        return [(int(chat["_id"]), chat) for chat in self.db.chats.find({"users": user_id}).sort(
            [("started_at", -1), ("opened_by_update", -1)]).limit(limit)]

    # -- the pool lock -------------------------------------------------------------------

    def _pool_lock(self, language: str) -> PoolLease:
        return PoolLease(self.db.locks, f"lobby:{language}", self._apply_pairing)

    def _apply_pairing(self, intent: Mapping[str, Any]) -> bool:
        """Write a pairing, and say whether it stands (docs/storage.md, find_partner).

        Every step is idempotent, so the pool's next holder rolls forward a pairing whose
        writer stopped half way; one whose chat has ended since is left alone, and one that
        finds a user taken by another pairing (a holder stalled past its lease), or the
        partner no longer waiting, is undone.
        """
        a, b, chat_id = intent["searcher"], intent["partner"], intent["chat_id"]
        if not self._create("chats", chat_id, docs.chat_document(
                [b, a], intent["language"], intent["started_at"], intent["update_id"])) and \
                self.db.chats.find_one({"_id": chat_id, "ended_at": None}) is None:
            self._drop_stale_entries((a, b), intent["started_at"])
            return False  # ended since: rolling it forward would reopen it
        # The partner was chosen from the lobby: taken only while still waiting there.
        waiting = {"chat": None, "waiting_since": {"$ne": None}}
        for user, partner, partner_language, free in (
                (a, b, intent["partner_language"], {"chat": None}),
                (b, a, intent["language_of_searcher"], waiting)):
            if not self.db.users.update_one(
                    {"_id": user, "$or": [free, {"chat.id": chat_id}]},
                    {"$set": {"chat": docs.chat_field(chat_id, partner, partner_language,
                                                      intent["started_at"]),
                              "waiting_since": None}}).matched_count:
                for taken in (a, b):  # give back whom it took, waiting again if they were
                    entry = self.db.lobby.find_one({"_id": taken}) or {}
                    self.db.users.update_one({"_id": taken, "chat.id": chat_id}, {"$set": {
                        "chat": None, "waiting_since": entry.get("since")}})
                self.db.chats.delete_one({"_id": chat_id, "ended_at": None})
                self._drop_stale_entries((a, b), intent["started_at"])
                return False
        self.db.lobby.delete_many({"_id": {"$in": [a, b]}})
        return True

    def _drop_stale_entries(self, users: tuple[int, int], before: float) -> None:
        """Delete the lobby entries (from before ``before``) of those not waiting, or gone.

        A lobby timeout, a pairing or an erasure cut short left them, and every search
        would choose them.
        """
        waiting = {doc["_id"] for doc in self.db.users.find(
            {"_id": {"$in": list(users)}, "waiting_since": {"$ne": None}}, {"_id": 1})}
        self.db.lobby.delete_many({"_id": {"$in": [u for u in users if u not in waiting]},
                                   "since": {"$lte": before}})

    # -- lobby and chats -----------------------------------------------------------------

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``: decided and written under the pool's lease."""
        doc, resumed = self._searcher(user_id, update_id)
        if resumed is not None:
            return resumed
        language = self._pool_of(user_id, doc["language"])  # "*": the any-language pool
        with self._pool_lock(language) as lock:
            doc, resumed = self._searcher(user_id, update_id)
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
            paired = self._apply_pairing(intent)
            lock.clear_intent()
        if not paired:  # a side taken meanwhile, or a stale entry: Telegram re-delivers
            raise StorageUnavailable("mongo: the partner was taken by another pairing")
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
        return [(int(entry["_id"]), str(entry["language"])) for entry in _claim_each(
            self.db.lobby, {"since": {"$lt": waiting_before}, "language": {"$ne": "*"},
                            "offered": {"$ne": True}}, {"offered": True}, limit,
            projection={"language": 1}, sort=[("since", 1)])]

    def _searcher(self, user_id: int, update_id: int) -> tuple[dict[str, Any], MatchResult | None]:
        """The searcher's document, and the answer if they are in a chat or refused the age."""
        doc = self.db.users.find_one({"_id": user_id}, {"recent_updates": 0})
        if doc is None:
            raise LookupError(f"unknown user {user_id}")
        return doc, self._resumed_search(doc, update_id)

    def leave_lobby(self, user_id: int) -> bool:
        """See ``Repository.leave_lobby``."""
        doc = self.db.users.find_one({"_id": user_id}, {"language": 1})
        return doc is not None and self._leave_lobby(user_id, doc["language"])

    def _leave_lobby(self, user_id: int, language: str) -> bool:
        with self._pool_lock(self._pool_of(user_id, language)):  # the user's side first
            self.db.users.update_one({"_id": user_id, "chat": None},
                                     {"$set": {"waiting_since": None}})
            return bool(self.db.lobby.delete_one({"_id": user_id}).deleted_count)

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
        if not chat:  # a re-delivery of the update that ended it tidies both sides again
            if (before := self._ended_by(user_id, update_id)) is None:
                return None
            chat = {"id": before.chat_id, "partner": before.partner_id}
        chat_id, partner_id = int(chat["id"]), int(chat["partner"])
        ended = self.db.chats.find_one_and_update(
            {"_id": chat_id, "ended_at": None},
            {"$set": docs.ended_fields(user_id, reason, now, update_id,
                                       docs.utc(now) + self._chat_retention)},
            projection={"_id": 1})
        # None: the partner ended it first, and our side is tidied here if not yet.
        closed = ended or self.db.chats.find_one({"_id": chat_id}, {"closed_by_update": 1})
        self.db.users.update_many({"_id": {"$in": [user_id, partner_id]}, "chat.id": chat_id},
                                  {"$set": {"chat": None}})
        return matching.end_answer(chat_id, partner_id, self._language(partner_id),
                                   ended is not None, (closed or {}).get("closed_by_update"),
                                   update_id)

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
