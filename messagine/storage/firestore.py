"""The Firestore repository: the fallback for operators on Google Cloud without MongoDB.

Every decision that depends on what was read is committed as an optimistic transaction:
the documents are read (one BatchGetDocuments), the writes are committed in one batch
whose preconditions say "unchanged since read" (``last_update_time``) or "still absent"
(``create``), and Firestore checks all of them atomically with the commit. A conflict
fails the whole commit, and the operation reads again and decides again. This is the
protocol of Firestore's own client-side transactions; it takes no server locks, so
contention costs a retry instead of a lock wait (the emulator's lock waits take seconds).

No single document is written on every relay or every match: an update writes its
sender's document, a match writes the two users, the new chat and the partner's lobby
entry. Pairing needs no lock document: a searcher claims a specific waiting entry with a
guarded delete, and a user who joins the lobby looks once more for anyone who joined
before them, so two users who search at once are never both left waiting
(docs/storage.md argues each operation; the indexes it needs are in
firestore.indexes.json beside this module). google-cloud-firestore is imported only here.
"""

from __future__ import annotations

import contextlib
import functools
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from messagine.flood import FloodRule, FloodState, admit
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

# Telegram re-sends the one pending update of a chat, so a re-delivery is always among
# a user's newest few update ids.
_RECENT_UPDATES = 50
# A request must answer well inside Telegram's 60 s: each call gets a short budget, and
# transient errors are retried only inside it.
_CALL_TIMEOUT_S = 5.0
_RETRY = Retry(predicate=if_exception_type(gexc.ServiceUnavailable, gexc.InternalServerError),
               initial=0.05, maximum=0.5, multiplier=2.0, timeout=4.0)
_ATTEMPTS = 12  # optimistic commits that lost a race are decided again this many times
_CONFLICTS = (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted)
_UNAVAILABLE = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
                gexc.ResourceExhausted, gexc.Unknown, gexc.Cancelled, gexc.RetryError,
                gexc.GatewayTimeout, gexc.Unauthenticated, gexc.PermissionDenied)
_PAGE = 50
_PURGE_BATCH = 400  # a commit takes at most 500 writes
_CALL = {"retry": _RETRY, "timeout": _CALL_TIMEOUT_S}
# Writes are not retried by the client: a commit applied whose answer was lost would fail
# its own preconditions on the retry and be taken for another instance's change. An
# unanswered write is StorageUnavailable: Telegram's re-delivery decides again.
_WRITE = {"retry": None, "timeout": _CALL_TIMEOUT_S}


class _ConflictError(Exception):
    """Another instance changed what this operation read; read and decide again."""


def _unavailable_as_storage_error(method: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (*_UNAVAILABLE, *_CONFLICTS) as error:
            # Conflicts reach here only from outside the retried operations: a query
            # whose index is still building (FailedPrecondition), an aborted read.
            raise StorageUnavailable(f"firestore: {type(error).__name__}") from None

    return wrapper


def _retrying(what: str, attempt: Callable[[], R]) -> R:
    """Run ``attempt`` until its optimistic commit is not beaten by another instance."""
    pause = 0.005
    for _ in range(_ATTEMPTS):
        try:
            return attempt()
        except (_ConflictError, *_CONFLICTS):
            time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
            pause = min(pause * 2, 0.2)
    raise StorageUnavailable(f"firestore: {what} kept conflicting with other instances")


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class _Guarded:
    """A batch whose writes hold only if the documents are as they were read."""

    def __init__(self, client: Any, read: Iterable[Any]) -> None:
        self._client = client
        self._batch = client.batch()
        self._read = {snap.reference.path: snap for snap in read}
        self.writes = 0

    def put(self, ref: Any, fields: Mapping[str, Any]) -> None:
        """Create the document if it was read absent (or not read), else update it."""
        snap = self._read.get(ref.path)
        if snap is None or not snap.exists:
            self._batch.create(ref, dict(fields))
        else:
            self._batch.update(ref, dict(fields), option=self._client.write_option(
                last_update_time=snap.update_time))
        self.writes += 1

    def replace(self, ref: Any, fields: Mapping[str, Any]) -> None:
        """Overwrite the document whatever it holds."""
        self._batch.set(ref, dict(fields))
        self.writes += 1

    def delete(self, ref: Any) -> None:
        """Delete the document if it exists as read."""
        snap = self._read.get(ref.path)
        if snap is not None and snap.exists:
            self._batch.delete(ref, option=self._client.write_option(
                last_update_time=snap.update_time))
            self.writes += 1

    def commit(self) -> list[Any]:
        if not self.writes:
            return []
        return list(self._batch.commit(**_WRITE))


class FirestoreRepository:
    """The repository port on a Firestore (native mode) database."""

    backend = "firestore"

    def __init__(
        self, project: str | None = None, database: str = "(default)", *,
        message_retention_days: int = 30, chat_retention_days: int = 180,
        update_retention_s: int = 86_400, client_factory: Callable[..., Any] | None = None,
        flood_rule: FloodRule | None = None, emulator_host: str | None = None,
    ) -> None:
        self._emulator_host = emulator_host
        self._project = project
        self._database = database
        self._message_retention = timedelta(days=message_retention_days)
        self._chat_retention = timedelta(days=chat_retention_days)
        self._update_retention = timedelta(seconds=update_retention_s)
        self._client_factory = client_factory or firestore.Client
        self._flood_rule = flood_rule or FloodRule()
        self._client: Any = None
        self._lock = threading.Lock()

    # -- the client ----------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The client, made on first use: one per instance, reused by every request."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        if self._emulator_host is None:
            return self._client_factory(project=self._project, database=self._database)
        from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415

        client = self._client_factory(project=self._project, database=self._database,
                                      credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        # The client takes the emulator only from its own process environment; the
        # settings may come from elsewhere (tests, the CLI), so it is told directly.
        client._emulator_host = self._emulator_host
        return client

    def _col(self, name: str) -> Any:
        return self.client.collection(name)

    def _user(self, user_id: int) -> Any:
        return self._col("users").document(str(user_id))

    def _entry(self, user_id: int) -> Any:
        return self._col("lobby").document(str(user_id))

    def _chat(self, chat_id: int) -> Any:
        return self._col("chats").document(str(chat_id))

    def _get(self, *refs: Any) -> list[Any]:
        """Read documents in one round trip, in the order asked."""
        found = {snap.reference.path: snap
                 for snap in self.client.get_all(list(refs), **_CALL)}
        return [found[ref.path] for ref in refs]

    def _stream(self, query: Any) -> Iterator[Any]:
        return query.stream(**_CALL)  # type: ignore[no-any-return]

    def _count(self, query: Any) -> int:
        return int(query.count().get(**_CALL)[0][0].value)

    def _guarded(self, *read: Any) -> _Guarded:
        return _Guarded(self.client, read)

    def close(self) -> None:
        """Close the client (tests; an instance keeps it for its life)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def init_schema(self) -> None:
        """Nothing to create: collections appear on their first write.

        Indexes and TTL policies are deployed with gcloud (docs/storage.md).
        """

    # -- reading state -------------------------------------------------------------------

    @staticmethod
    def _state(snap: Any, *, is_new: bool = False) -> UserState:
        doc = snap.to_dict()
        chat = doc.get("chat")
        active = None
        if chat:
            active = ActiveChat(int(chat["id"]), int(chat["partner"]),
                                str(chat["partner_language"]), float(chat["started_at"]))
        return UserState(
            user_id=int(snap.id), language=str(doc["language"]), is_new=is_new,
            blocked=bool(doc.get("blocked")), banned=bool(doc.get("banned")), chat=active,
            waiting_since=doc.get("waiting_since"),
            analytics_opt_out=bool(doc.get("analytics_opt_out")),
            age_confirmed=doc.get("age_answer") == "yes",
            language_code=doc.get("language_code"),
        )

    @_unavailable_as_storage_error
    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        snap = self._user(user_id).get(**_CALL)
        return self._state(snap) if snap.exists else None

    # -- updates and users ---------------------------------------------------------------

    @_unavailable_as_storage_error
    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: one read and one guarded commit.

        The claim is the update id in the sender's own document, so claim, profile
        refresh, flood count and state load touch one document that only this user's
        updates write.
        """
        if profile is None:
            claim = self._col("claims").document(str(update_id))
            try:
                claim.create({"claimed_at": now,
                              "expires_at": _utc(now) + self._update_retention}, **_WRITE)
            except gexc.AlreadyExists:
                return OpenedUpdate(duplicate=True)
            return OpenedUpdate(duplicate=False)
        return _retrying("open_update", lambda: self._open_update_once(
            update_id, profile, default_language, now, album))

    def _open_update_once(self, update_id: int, profile: Profile, default_language: str,
                          now: float, album: str | None) -> OpenedUpdate:
        (snap,) = self._get(self._user(profile.user_id))
        doc = snap.to_dict() if snap.exists else {}
        recent = list(doc.get("recent_updates", []))
        if update_id in recent:
            return OpenedUpdate(duplicate=True)
        flood, verdict = admit(FloodState(**doc.get("flood", {})), now, album,
                               self._flood_rule)
        fields: dict[str, Any] = {
            "first_name": profile.first_name, "last_name": profile.last_name,
            "username": profile.username, "language_code": profile.language_code,
            "last_seen": now, "nudge_pending": True, "flood": asdict(flood),
            "recent_updates": [*recent, update_id][-_RECENT_UPDATES:],
        }
        if not snap.exists:
            fields |= {"first_seen": now, "language": default_language, "blocked": False,
                       "banned": False, "chat": None, "waiting_since": None,
                       "reminders_off": False}
        batch = self._guarded(snap)
        batch.put(snap.reference, fields)
        batch.commit()
        state = self._state(_Snapshot(snap.id, {**doc, **fields}), is_new=not snap.exists)
        return OpenedUpdate(duplicate=False, user=state, throttled=verdict.throttled,
                            warn=verdict.warn)

    @_unavailable_as_storage_error
    def release_update(self, update_id: int) -> None:
        """See ``Repository.release_update``."""
        for snap in self._stream(self._col("users").where(
                filter=FieldFilter("recent_updates", "array_contains", update_id))):
            snap.reference.update({"recent_updates": firestore.ArrayRemove([update_id])},
                                  **_WRITE)
        self._col("claims").document(str(update_id)).delete(**_WRITE)

    @_unavailable_as_storage_error
    def set_language(self, user_id: int, language: str) -> UserState:
        """See ``Repository.set_language``: the user and their lobby entry change together."""
        def attempt() -> UserState:
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            if not user.exists:
                raise LookupError(f"unknown user {user_id}")
            doc = user.to_dict()
            if doc.get("chat") or doc["language"] == language:
                return self._state(user)
            batch = self._guarded(user, entry)
            batch.put(user.reference, {"language": language})
            if entry.exists:
                batch.put(entry.reference, {"language": language})
            batch.commit()
            return self._state(_Snapshot(user.id, {**doc, "language": language}))

        return _retrying("set_language", attempt)

    def _set_flags(self, user_id: int, fields: Mapping[str, Any], *,
                   leave_lobby: bool = False) -> bool:
        """Set fields of a user (False for an unknown user), optionally leaving the lobby."""
        def attempt() -> bool:
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            if not user.exists:
                return False
            batch = self._guarded(user, entry)
            changes = dict(fields)
            if leave_lobby and entry.exists:
                batch.delete(entry.reference)
                if not user.to_dict().get("chat"):
                    changes["waiting_since"] = None
            batch.put(user.reference, changes)
            batch.commit()
            return True

        return _retrying("user update", attempt)

    @_unavailable_as_storage_error
    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        self._set_flags(user_id, {"blocked": blocked}, leave_lobby=blocked)

    @_unavailable_as_storage_error
    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        self._set_flags(user_id, {"analytics_opt_out": opt_out})

    @_unavailable_as_storage_error
    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        self._set_flags(user_id, {"age_answer": "yes" if confirmed else "no",
                                  "age_answered_at": now})

    @_unavailable_as_storage_error
    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        self._set_flags(user_id, {"reminders_off": not enabled})

    @_unavailable_as_storage_error
    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        return self._set_flags(user_id, {"banned": banned}, leave_lobby=banned)

    # -- privacy -------------------------------------------------------------------------

    @_unavailable_as_storage_error
    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        user, entry = self._get(self._user(user_id), self._entry(user_id))
        if not user.exists:
            return None
        profile = {"id": user_id, **{k: v for k, v in user.to_dict().items()
                                     if k != "recent_updates"}}
        lobby = entry.to_dict() if entry.exists else None
        profile["lobby"] = {"language": lobby["language"], "since": lobby["since"]} \
            if lobby else None
        chats = [self._chat_record(doc, int(snap.id), user_id) for snap, doc in sorted(
            ((snap, snap.to_dict()) for snap in self._chats_of(user_id)),
            key=lambda pair: (pair[1]["started_at"], pair[1]["opened_by_update"]))]
        messages = sorted((self._link(snap.to_dict()) for snap in self._stream(
            self._col("links").where(filter=FieldFilter("sender_id", "==", user_id)).where(
                filter=FieldFilter("role", "==", "sent")))), key=lambda m: m.sent_at)
        exclusions = [(int(d["other_id"]), d["reason"], d["created_at"]) for d in (
            snap.to_dict() for snap in self._stream(self._col("exclusions").where(
                filter=FieldFilter("user_id", "==", user_id))))]
        reports = sorted(((int(d["reported_id"]), d["reason"], d["created_at"], d["status"])
                          for d in (snap.to_dict() for snap in self._stream(
                              self._col("reports").where(
                                  filter=FieldFilter("reporter_id", "==", user_id))))),
                         key=lambda r: r[2])
        return UserRecords(profile, chats, messages, exclusions, reports)

    def _chats_of(self, user_id: int) -> Iterator[Any]:
        return self._stream(self._col("chats").where(
            filter=FieldFilter("users", "array_contains", user_id)))

    def _latest_chats(self, user_id: int, limit: int) -> Iterator[Any]:
        """The user's chats, newest first (a chat made by a later update is newer)."""
        descending = firestore.Query.DESCENDING
        return self._stream(self._col("chats").where(
            filter=FieldFilter("users", "array_contains", user_id))
            .order_by("started_at", direction=descending)
            .order_by("opened_by_update", direction=descending).limit(limit))

    @staticmethod
    def _chat_record(doc: Mapping[str, Any], chat_id: int, user_id: int) -> ChatRecord:
        return ChatRecord(chat_id, next((int(u) for u in doc["users"] if u != user_id), 0),
                          doc["language"], doc["started_at"], doc.get("ended_at"),
                          doc.get("end_reason"),
                          None if doc.get("ended_by") is None else doc["ended_by"] == user_id)

    @_unavailable_as_storage_error
    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``; each chat gets its own random tombstone id."""
        counts = {"messages": 0, "exclusions": 0, "lobby": 0, "chats_anonymised": 0}

        def erase() -> tuple[int, int, int]:
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            batch = self._guarded(user, entry)
            batch.delete(entry.reference)
            banned = user.exists and bool(user.to_dict().get("banned"))
            if banned:
                # A ban outlives erasure, or /deleteme would lift it: the document keeps
                # only the id and the ban. Reports about the user stay (the policy says why).
                batch.replace(user.reference, {
                    "banned": True, "blocked": False, "language": "en", "chat": None,
                    "waiting_since": None, "first_name": "", "first_seen": 0.0,
                    "last_seen": 0.0, "reminders_off": True, "nudge_pending": False})
            else:
                batch.delete(user.reference)
            batch.commit()
            return int(entry.exists), int(banned), int(user.exists and not banned)

        # First out of the lobby and the users, in one guarded commit: from then on no
        # search can pair them, so the chats below are all there will ever be.
        counts["lobby"], counts["kept_for_ban"], counts["profile"] = _retrying("erase", erase)
        for field_name in ("sender_id", "recipient_id"):
            counts["messages"] += self._delete_all(self._col("links").where(
                filter=FieldFilter(field_name, "==", user_id)), count_role="sent")
        for field_name in ("user_id", "other_id"):
            counts["exclusions"] += self._delete_all(self._col("exclusions").where(
                filter=FieldFilter(field_name, "==", user_id)))
        for snap in self._chats_of(user_id):
            counts["chats_anonymised"] += self._update_guarded(
                snap.reference, lambda doc: _anonymised(doc, user_id))
        for snap in self._stream(self._col("users").where(
                filter=FieldFilter("chat.partner", "==", user_id))):
            self._update_guarded(snap.reference, lambda doc: {"chat": None} if (
                doc.get("chat") or {}).get("partner") == user_id else None)
        for snap in self._stream(self._col("reports").where(
                filter=FieldFilter("reporter_id", "==", user_id))):
            self._update_guarded(snap.reference, lambda doc: {
                "reporter_id": -secrets.randbits(62) - 1} if doc.get("reporter_id") == user_id
                else None)
        return counts

    def _update_guarded(self, ref: Any,
                        change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> int:
        """Apply ``change`` to the document as it is now (1), or nothing if it says None (0)."""
        def attempt() -> int:
            (snap,) = self._get(ref)
            fields = change(snap.to_dict()) if snap.exists else None
            if fields is None:
                return 0
            batch = self._guarded(snap)
            batch.put(ref, fields)
            batch.commit()
            return 1

        return _retrying("update", attempt)

    def _delete_all(self, query: Any, count_role: str | None = None) -> int:
        """Delete what ``query`` finds, in batches; counts documents (of ``count_role``)."""
        deleted = 0
        while True:
            snaps = list(self._stream(query.limit(_PURGE_BATCH)))
            if not snaps:
                return deleted
            batch = self.client.batch()
            for snap in snaps:
                batch.delete(snap.reference)
                if count_role is None or snap.to_dict().get("role") == count_role:
                    deleted += 1
            batch.commit(**_WRITE)

    @_unavailable_as_storage_error
    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``.

        The TTL policies (docs/storage.md) delete the same documents, but only within
        about a day of expiry; this keeps the published retention. A message is two
        documents (one per end) with the same ``sent_at``; both go, and count once.
        """
        links = self._stream(self._col("links").where(
            filter=FieldFilter("sent_at", "<", now - retention.messages_s)).limit(2 * limit))
        messages: dict[tuple[int, int], list[Any]] = {}
        for snap in links:
            doc = snap.to_dict()
            key = (int(doc["sender_id"]), int(doc["sender_message_id"]))
            if key not in messages and len(messages) < limit:
                messages[key] = [self._link_ref(*key), self._link_ref(
                    int(doc["recipient_id"]), int(doc["copy_message_id"]))]
        claims = self._stream(self._col("claims").where(
            filter=FieldFilter("claimed_at", "<", now - retention.claims_s)).limit(limit))
        chats = self._stream(self._col("chats").where(
            filter=FieldFilter("ended_at", "<", now - retention.chats_s)).limit(limit))
        claim_refs = [snap.reference for snap in claims]
        chat_refs = [snap.reference for snap in chats]
        self._delete_refs([ref for pair in messages.values() for ref in pair]
                          + claim_refs + chat_refs)
        return {"messages": len(messages), "claims": len(claim_refs), "chats": len(chat_refs)}

    def _delete_refs(self, refs: list[Any]) -> None:
        """Delete the documents ``refs`` (absent ones too), a batch per _PURGE_BATCH."""
        for start in range(0, len(refs), _PURGE_BATCH):
            batch = self.client.batch()
            for ref in refs[start:start + _PURGE_BATCH]:
                batch.delete(ref)
            batch.commit(**_WRITE)

    # -- moderation ----------------------------------------------------------------------

    @_unavailable_as_storage_error
    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        for snap in self._latest_chats(user_id, 1):
            return self._chat_record(snap.to_dict(), int(snap.id), user_id)
        return None

    @_unavailable_as_storage_error
    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        query = (self._col("links").where(filter=FieldFilter("chat_id", "==", chat_id))
                 .where(filter=FieldFilter("sender_id", "==", sender_id))
                 .where(filter=FieldFilter("role", "==", "sent"))
                 .order_by("sender_message_id", direction=firestore.Query.DESCENDING)
                 .limit(limit))
        return sorted(int(snap.get("sender_message_id")) for snap in self._stream(query))

    @_unavailable_as_storage_error
    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float) -> Report:
        """See ``Repository.add_report``; ids are random, so no counter document is hot."""
        report = Report(secrets.randbelow(10**9) + 1, reporter_id, reported_id, chat_id,
                        reason, now, "open")
        self._col("reports").document(str(report.report_id)).create({
            "reporter_id": reporter_id, "reported_id": reported_id, "chat_id": chat_id,
            "reason": reason, "created_at": now, "status": "open"}, **_WRITE)
        return report

    @_unavailable_as_storage_error
    def resolve_report(self, report_id: int, status: str) -> Report | None:
        """See ``Repository.resolve_report``: the open -> status change is won once."""
        def attempt() -> Report | None:
            (snap,) = self._get(self._col("reports").document(str(report_id)))
            if not snap.exists or snap.get("status") != "open":
                return None
            batch = self._guarded(snap)
            batch.put(snap.reference, {"status": status})
            batch.commit()
            d = snap.to_dict()
            return Report(report_id, d["reporter_id"], d["reported_id"], d["chat_id"],
                          d["reason"], d["created_at"], status)

        return _retrying("resolve_report", attempt)

    @_unavailable_as_storage_error
    def moderation_stats(self, since: float) -> ModerationStats:
        """See ``Repository.moderation_stats`` (count aggregations: no document is read)."""
        chats = self._col("chats")
        return ModerationStats(
            users=self._count(self._col("users")),
            waiting=self._count(self._col("lobby")),
            active_chats=self._count(chats.where(filter=FieldFilter("ended_at", "==", None))),
            chats_today=self._count(chats.where(filter=FieldFilter("started_at", ">=", since))),
            reports_today=self._count(self._col("reports").where(
                filter=FieldFilter("created_at", ">=", since))),
        )

    # -- reminders -----------------------------------------------------------------------

    def _due(self, idle_before: float) -> Any:
        return (self._col("users").where(filter=FieldFilter("nudge_pending", "==", True))
                .where(filter=FieldFilter("last_seen", "<", idle_before)))

    @_unavailable_as_storage_error
    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: each user claimed by one guarded commit."""
        query = (self._due(idle_before).where(filter=FieldFilter("blocked", "==", False))
                 .where(filter=FieldFilter("banned", "==", False))
                 .where(filter=FieldFilter("reminders_off", "==", False))
                 .order_by("last_seen"))
        return self._claim_each(query, limit, lambda snap: self._claim_nudge(snap, now))

    def _claim_nudge(self, snap: Any, now: float) -> Nudge | None:
        if not self._commit_unless_beaten(snap, {"nudge_pending": False, "reminded_at": now}):
            return None  # another run claimed them, or they wrote since: not due now
        doc = snap.to_dict()
        state = ("chatting" if doc.get("chat") else
                 "waiting" if doc.get("waiting_since") is not None else "idle")
        return Nudge(int(snap.id), doc["language"], state)

    def _claim_each(self, query: Any, limit: int, claim: Callable[[Any], R | None]) -> list[R]:
        """Claim up to ``limit`` of what ``query`` finds; ``claim`` says None when beaten."""
        claimed: list[R] = []
        for _ in range(limit + 3):  # a round that claims nobody still makes progress
            if len(claimed) >= limit:
                break
            found = list(self._stream(query.limit(limit - len(claimed))))
            if not found:
                break
            claimed.extend(r for r in map(claim, found) if r is not None)
        return claimed

    def _commit_unless_beaten(self, snap: Any, fields: Mapping[str, Any]) -> bool:
        """Write ``fields`` if the document is still as read; False if someone changed it."""
        batch = self._guarded(snap)
        batch.put(snap.reference, fields)
        try:
            batch.commit()
        except _CONFLICTS:
            return False
        return True

    @_unavailable_as_storage_error
    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        self._set_flags(user_id, {"nudge_pending": True})

    @_unavailable_as_storage_error
    def count_idle_excluded(self, idle_before: float) -> dict[str, int]:
        """See ``Repository.count_idle_excluded``."""
        due = self._due(idle_before)
        blocked = FieldFilter("blocked", "==", True)
        not_blocked = FieldFilter("blocked", "==", False)
        return {
            "blocked": self._count(due.where(filter=blocked)),
            "banned": self._count(due.where(filter=not_blocked).where(
                filter=FieldFilter("banned", "==", True))),
            "opted_out": self._count(due.where(filter=not_blocked).where(
                filter=FieldFilter("banned", "==", False)).where(
                filter=FieldFilter("reminders_off", "==", True))),
        }

    @_unavailable_as_storage_error
    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``: each entry removed by one guarded commit."""
        expired: list[tuple[int, str]] = []
        for entry in list(self._stream(self._col("lobby").where(
                filter=FieldFilter("since", "<", waiting_before)).order_by("since")
                .limit(limit))):
            user_id = int(entry.id)
            (user,) = self._get(self._user(user_id))
            batch = self._guarded(entry, user)
            batch.delete(entry.reference)
            if user.exists and not user.to_dict().get("chat"):
                batch.put(user.reference, {"waiting_since": None})
            try:
                batch.commit()
            except _CONFLICTS:
                continue  # matched, moved or left meanwhile: not this run's to expire
            expired.append((user_id, str(entry.get("language"))))
        return expired

    # -- the lobby and chats -------------------------------------------------------------

    @_unavailable_as_storage_error
    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        counts: dict[int, int] = {}
        for snap in self._stream(self._col("links").where(
                filter=FieldFilter("chat_id", "==", chat_id)).where(
                filter=FieldFilter("role", "==", "sent"))):
            sender = int(snap.get("sender_id"))
            counts[sender] = counts.get(sender, 0) + 1
        return counts

    @_unavailable_as_storage_error
    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float) -> None:
        """See ``Repository.exclude_pair``; waiting entries learn of it at once."""
        with contextlib.suppress(gexc.AlreadyExists):
            self._col("exclusions").document(f"{user_id}:{other_id}").create({
                "user_id": user_id, "other_id": other_id, "reason": reason,
                "created_at": now}, **_WRITE)
        for waiting, avoided in ((user_id, other_id), (other_id, user_id)):
            # ArrayUnion is applied by the server: no read, no lost update. NotFound: the
            # user is not waiting.
            with contextlib.suppress(gexc.NotFound):
                self._entry(waiting).update({"avoid": firestore.ArrayUnion([avoided])},
                                            **_WRITE)

    def _avoided_by(self, user_id: int, recent_partners: int) -> set[int]:
        """The user's recent partners and everyone excluded in either direction."""
        avoid: set[int] = set()
        if recent_partners > 0:
            for snap in self._latest_chats(user_id, recent_partners):
                avoid.update(int(u) for u in snap.get("users"))
        for field_name in ("user_id", "other_id"):
            for snap in self._stream(self._col("exclusions").where(
                    filter=FieldFilter(field_name, "==", user_id))):
                avoid.update((int(snap.get("user_id")), int(snap.get("other_id"))))
        avoid.discard(user_id)
        return avoid

    def _candidates(self, user_id: int, pool: str, avoid: set[int],
                    joined_before: tuple[datetime, str] | None = None) -> Iterator[Any]:
        """Compatible lobby entries of ``pool``, longest waiting first, page by page."""
        query = self._col("lobby").where(filter=FieldFilter("language", "==", pool)).order_by(
            "since").order_by("__name__")
        last = None
        while True:
            page = list(self._stream((query.start_after(last) if last else query)
                                     .limit(_PAGE)))
            for entry in page:
                other = int(entry.id)
                if other == user_id or other in avoid or user_id in entry.get("avoid"):
                    continue
                if joined_before and (entry.create_time, entry.id) >= joined_before:
                    continue
                yield entry
            if len(page) < _PAGE:
                return
            last = page[-1]

    @_unavailable_as_storage_error
    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``.

        A searcher takes the longest-waiting compatible entry with one guarded commit
        (the entry's delete fails if anyone else took it first). Finding none, they join
        the lobby, then look once more for compatible entries that joined before them:
        of two users who search at once the later one's second look always sees the
        earlier one, so they are never both left waiting.
        """
        was_waiting: bool | None = None
        joined = False

        def attempt() -> MatchResult:
            nonlocal was_waiting, joined
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            if not user.exists:
                raise LookupError(f"unknown user {user_id}")
            in_chat = self._in_chat(user, update_id)
            if in_chat is not None:
                if joined and not in_chat.resumed:
                    # Taken from the lobby after joining it in this call: the instance
                    # that took them announces the chat to both.
                    return MatchResult(MatchOutcome.WAITING, waiting_count=1)
                return in_chat
            if was_waiting is None:
                was_waiting = entry.exists
            language = str(user.get("language"))
            pool = str(entry.get("language")) if entry.exists else language
            avoid = self._avoided_by(user_id, recent_partners)
            for candidate in self._candidates(user_id, pool, avoid):
                matched = self._pair(user_id, candidate, pool, now, update_id, own_entry=None)
                if matched is not None:
                    return matched
            if not entry.exists:
                batch = self._guarded(user, entry)
                batch.put(entry.reference, {"language": pool, "since": now,
                                            "avoid": sorted(avoid), "offered": pool == "*"})
                batch.put(user.reference, {"waiting_since": now})
                joined_at = batch.commit()[0].update_time
                joined = True
                for candidate in self._candidates(user_id, pool, avoid,
                                                  joined_before=(joined_at, entry.id)):
                    matched = self._pair(user_id, candidate, pool, now, update_id,
                                         own_entry=joined_at)
                    if matched is not None:
                        return matched
            outcome = MatchOutcome.ALREADY_WAITING if was_waiting else MatchOutcome.WAITING
            waiting = self._count(self._col("lobby").where(
                filter=FieldFilter("language", "==", pool)))
            return MatchResult(outcome, waiting_count=waiting)

        return _retrying("find_partner", attempt)

    def _pair(self, user_id: int, candidate: Any, pool: str, now: float, update_id: int,
              own_entry: datetime | None) -> MatchResult | None:
        """Make a chat with ``candidate`` if both are still free; None if the entry is gone.

        ``own_entry``: the searcher joined the lobby at this time and must still be there
        (if someone took them meanwhile, that instance announces the chat).
        """
        partner_id = int(candidate.id)
        me, them, their_entry, my_entry = self._get(
            self._user(user_id), self._user(partner_id), self._entry(partner_id),
            self._entry(user_id))
        if own_entry is not None and not my_entry.exists:
            # Someone took the searcher from the lobby after they joined; the instance
            # that did announces the chat to both.
            return MatchResult(MatchOutcome.WAITING, waiting_count=1)
        if me.to_dict().get("chat"):
            raise _ConflictError  # someone paired the searcher: decide again from the top
        if not (their_entry.exists and them.exists and not them.to_dict().get("chat")
                and their_entry.get("language") == pool
                and user_id not in their_entry.get("avoid")):
            return None
        chat_id = secrets.randbits(62)
        partner_language = str(them.get("language"))
        my_language = str(me.get("language"))
        batch = self._guarded(me, them, their_entry, my_entry)
        batch.put(self._chat(chat_id), {
            "users": [partner_id, user_id], "language": pool, "started_at": now,
            "opened_by_update": update_id, "ended_at": None, "ended_by": None,
            "end_reason": None, "closed_by_update": None})
        for ref, partner, language in ((me.reference, partner_id, partner_language),
                                       (them.reference, user_id, my_language)):
            batch.put(ref, {"chat": {"id": chat_id, "partner": partner,
                                     "partner_language": language, "started_at": now},
                            "waiting_since": None})
        batch.delete(their_entry.reference)
        batch.delete(my_entry.reference)
        batch.commit()
        return MatchResult(MatchOutcome.MATCHED,
                           ActiveChat(chat_id, partner_id, partner_language, now),
                           partner_waiting_since=their_entry.get("since"))

    def _in_chat(self, user: Any, update_id: int) -> MatchResult | None:
        state = self._state(user)
        if state.chat is None:
            return None
        (chat,) = self._get(self._chat(state.chat.chat_id))
        if chat.exists and chat.get("opened_by_update") == update_id:
            return MatchResult(MatchOutcome.MATCHED, state.chat, resumed=True)
        return MatchResult(MatchOutcome.IN_CHAT, state.chat)

    @_unavailable_as_storage_error
    def join_any_language(self, user_id: int) -> bool:
        """See ``Repository.join_any_language``."""
        def attempt() -> bool:
            (entry,) = self._get(self._entry(user_id))
            if not entry.exists:
                return False
            if entry.get("language") != "*":
                batch = self._guarded(entry)
                batch.put(entry.reference, {"language": "*", "offered": True})
                batch.commit()
            return True

        return _retrying("join_any_language", attempt)

    @_unavailable_as_storage_error
    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_language_offers``: each entry claimed by a guarded commit."""
        query = (self._col("lobby").where(filter=FieldFilter("offered", "==", False))
                 .where(filter=FieldFilter("since", "<", waiting_before)).order_by("since"))
        return self._claim_each(query, limit, lambda entry: (
            (int(entry.id), str(entry.get("language")))
            if self._commit_unless_beaten(entry, {"offered": True}) else None))

    @_unavailable_as_storage_error
    def leave_lobby(self, user_id: int) -> bool:
        """See ``Repository.leave_lobby``."""
        def attempt() -> bool:
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            if not entry.exists:
                return False
            batch = self._guarded(user, entry)
            batch.delete(entry.reference)
            if user.exists and not user.to_dict().get("chat"):
                batch.put(user.reference, {"waiting_since": None})
            batch.commit()
            return True

        return _retrying("leave_lobby", attempt)

    @_unavailable_as_storage_error
    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``: the chat's null ``ended_at`` is won once."""
        return _retrying("end_chat", lambda: self._end_chat_once(user_id, reason, now,
                                                                 update_id))

    def _end_chat_once(self, user_id: int, reason: EndReason, now: float,
                       update_id: int) -> EndedChat | None:
        (user,) = self._get(self._user(user_id))
        chat = user.to_dict().get("chat") if user.exists else None
        if not chat:
            return self._ended_by(user_id, update_id)
        chat_id, partner_id = int(chat["id"]), int(chat["partner"])
        record, partner = self._get(self._chat(chat_id), self._user(partner_id))
        if reason is EndReason.NEXT and record.exists and record.get("ended_at") is None \
                and record.get("opened_by_update") == update_id:
            return self._ended_by(user_id, update_id)  # this update opened it: resume
        batch = self._guarded(user, record, partner)
        batch.put(user.reference, {"chat": None})
        partner_in_it = partner.exists and (partner.get("chat") or {}).get("id") == chat_id
        if partner_in_it:
            batch.put(partner.reference, {"chat": None})
        partner_language = str(partner.get("language")) if partner.exists else "en"
        if record.exists and record.get("ended_at") is None:
            batch.put(record.reference, {
                "ended_at": now, "ended_by": user_id, "end_reason": reason.value,
                "closed_by_update": update_id, "expires_at": _utc(now) + self._chat_retention})
            batch.commit()
            return EndedChat(chat_id, partner_id, partner_language, resumed=False)
        # The partner ended it first; tidy our side.
        batch.commit()
        if record.exists and record.get("closed_by_update") == update_id:
            return EndedChat(chat_id, partner_id, partner_language, resumed=True)
        return None

    def _ended_by(self, user_id: int, update_id: int) -> EndedChat | None:
        """The user's chat that ``update_id`` ended before (a re-delivery), if any."""
        for snap in self._stream(self._col("chats").where(
                filter=FieldFilter("closed_by_update", "==", update_id))):
            users = [int(u) for u in snap.get("users")]
            if user_id in users:
                partner_id = next(u for u in users if u != user_id)
                return EndedChat(int(snap.id), partner_id, self._language(partner_id),
                                 resumed=True)
        return None

    def _language(self, user_id: int) -> str:
        (snap,) = self._get(self._user(user_id))
        return str(snap.get("language")) if snap.exists else "en"

    # -- message links -------------------------------------------------------------------

    @_unavailable_as_storage_error
    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``: one commit of two documents.

        The link is stored under both ends' (chat, message) ids, so that finding a reply's
        target is one document read from either side.
        """
        fields = {"chat_id": link.chat_id, "sender_id": link.sender_id,
                  "sender_message_id": link.sender_message_id,
                  "recipient_id": link.recipient_id, "copy_message_id": link.copy_message_id,
                  "content_type": link.content_type, "sent_at": link.sent_at,
                  "expires_at": _utc(link.sent_at) + self._message_retention}
        batch = self.client.batch()
        batch.set(self._link_ref(link.sender_id, link.sender_message_id),
                  {**fields, "role": "sent"})
        batch.set(self._link_ref(link.recipient_id, link.copy_message_id),
                  {**fields, "role": "copy"})
        batch.commit(**_WRITE)

    def _link_ref(self, user_id: int, message_id: int) -> Any:
        return self._col("links").document(f"{user_id}:{message_id}")

    @staticmethod
    def _link(doc: Mapping[str, Any]) -> MessageLink:
        return MessageLink(doc["chat_id"], doc["sender_id"], doc["sender_message_id"],
                           doc["recipient_id"], doc["copy_message_id"], doc["content_type"],
                           doc["sent_at"])

    @_unavailable_as_storage_error
    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``: one document read."""
        (snap,) = self._get(self._link_ref(user_id, message_id))
        if not snap.exists or snap.get("chat_id") != chat_id:
            return None
        return self._link(snap.to_dict())

    # -- statistics ----------------------------------------------------------------------

    @_unavailable_as_storage_error
    def counts(self, user_id: int) -> Counts:
        """See ``Repository.counts`` (count aggregations)."""
        chats = self._col("chats")
        return Counts(
            users=self._count(self._col("users")),
            active_chats=self._count(chats.where(filter=FieldFilter("ended_at", "==", None))),
            previous_chats=self._count(chats.where(filter=FieldFilter("ended_at", "!=", None))),
            my_previous_chats=self._count(chats.where(
                filter=FieldFilter("users", "array_contains", user_id)).where(
                filter=FieldFilter("ended_at", "!=", None))),
            waiting=self._count(self._col("lobby")),
        )


class _Snapshot:
    """A document as just written, for ``_state`` (no second read)."""

    def __init__(self, doc_id: str, doc: Mapping[str, Any]) -> None:
        self.id = doc_id
        self._doc = doc

    def to_dict(self) -> dict[str, Any]:
        return dict(self._doc)


def _anonymised(chat: dict[str, Any], user_id: int) -> dict[str, Any] | None:
    """The chat with ``user_id`` replaced by a random tombstone id; None if not in it."""
    if user_id not in chat.get("users", []):
        return None
    tombstone = -secrets.randbits(62) - 1
    fields: dict[str, Any] = {"users": [tombstone if u == user_id else u
                                        for u in chat["users"]]}
    if chat.get("ended_by") == user_id:
        fields["ended_by"] = tombstone
    return fields
