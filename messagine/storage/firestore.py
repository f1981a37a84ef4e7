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
import itertools
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from messagine.domain import age_gate, albums, matching
from messagine.domain.age_gate import stores_profile
from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S, Decision, decide
from messagine.domain.erasure import (
    UNCONFIGURED_PEPPER,
    Tombstones,
    protection_key,
    returned,
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.nudges import claimable
from messagine.domain.ratings import RatingRule, RatingVerdict, rate
from messagine.domain.retention import (
    AccountStatus,
    Cutoffs,
    chat_idle,
    erasure_due,
    notice_due,
    outlives_period,
)
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
from messagine.storage.firestore_commit import (
    CALL,
    CONFLICTS,
    WRITE,
    ConflictError,
    Guarded,
    claim_each,
    commit_unless_beaten,
    retrying,
    unavailable_as_storage_error,
    update_guarded,
)
from messagine.storage.port import wrap_public_methods

_PAGE = 50
T = TypeVar("T")
_PURGE_BATCH = 400  # a commit takes at most 500 writes
_IDLE_SCAN = 5  # users read per idle chat returned at most (see MongoRepository)


@wrap_public_methods(unavailable_as_storage_error)
class FirestoreRepository:
    """The repository port on a Firestore (native mode) database."""

    backend = "firestore"

    def __init__(
        self, project: str | None = None, database: str = "(default)", *,
        message_retention_days: int = 30, chat_retention_days: int = 180,
        update_retention_s: int = 86_400, client_factory: Callable[..., Any] | None = None,
        flood_rule: FloodRule | None = None, emulator_host: str | None = None,
        pepper: bytes = UNCONFIGURED_PEPPER,
    ) -> None:
        self._pepper = pepper
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
                 for snap in self.client.get_all(list(refs), **CALL)}
        return [found[ref.path] for ref in refs]

    def _stream(self, query: Any) -> Iterator[Any]:
        return query.stream(**CALL)  # type: ignore[no-any-return]

    def _count(self, query: Any) -> int:
        return int(query.count().get(**CALL)[0][0].value)

    def _guarded(self, *read: Any) -> Guarded:
        return Guarded(self.client, read)

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
    def _state(snap: Any) -> UserState:
        return docs.user_state(int(snap.id), snap.to_dict())

    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        snap = self._user(user_id).get(**CALL)
        return self._state(snap) if snap.exists else None

    # -- updates and users ---------------------------------------------------------------

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None, owner: str = "", lease_s: float = LEASE_S,
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
                              "expires_at": docs.utc(now) + self._update_retention}, **WRITE)
            except gexc.AlreadyExists:
                return OpenedUpdate(duplicate=True)
            return OpenedUpdate(duplicate=False)
        return retrying("open_update", lambda: self._open_update_once(
            update_id, profile, default_language, now, album, owner, lease_s))

    def _open_update_once(self, update_id: int, profile: Profile, default_language: str,
                          now: float, album: str | None, owner: str, lease_s: float
                          ) -> OpenedUpdate:
        (snap,) = self._get(self._user(profile.user_id))
        doc = snap.to_dict() if snap.exists else {}
        if doc.get("banned"):  # claimed alone (domain.erasure)
            opened = self.open_update(update_id, None, "", now)
            return replace(opened, user=None if opened.duplicate else self._state(snap))
        decision, claim = decide(docs.stored_claim(doc, update_id), update_id, owner, now,
                                 lease_s)
        if claim is None:
            return OpenedUpdate(duplicate=decision is Decision.DONE,
                                busy=decision is Decision.BUSY)
        flood, verdict = admit(docs.flood_state(doc), now, album, self._flood_rule)
        fields: dict[str, Any] = {
            **docs.profile_fields(profile, now), "flood": docs.flood_document(flood),
            "recent_updates": docs.recent_with(doc, update_id),
            "claims": docs.claims_with(doc, claim, now),
        }
        if not snap.exists:
            fields |= docs.new_user_fields(default_language, now)
        batch = self._guarded(snap)
        batch.put(snap.reference, fields if stores_profile(doc.get("age_answer"))
                  else fields | docs.forgotten_profile())
        batch.commit()
        state = docs.user_state(profile.user_id, {**doc, **fields}, is_new=not snap.exists)
        return OpenedUpdate(duplicate=False, user=state, throttled=verdict.throttled,
                            warn=verdict.warn, resumed=decision is Decision.TAKE_OVER)

    def finish_update(self, update_id: int, user_id: int | None, owner: str) -> None:
        """See ``Repository.finish_update``: one commit, no read.

        The owner is not checked: a claim taken over is finished by whichever attempt
        ends first, and the work of both is done by then.
        """
        del owner
        if user_id is None:
            return
        # The user's document is gone when this update was their /deleteme: nothing to mark.
        with contextlib.suppress(gexc.NotFound):
            self._user(user_id).update(
                {"claims." + docs.claim_key(update_id): firestore.DELETE_FIELD}, **WRITE)

    def release_update(self, update_id: int, owner: str | None = None) -> None:
        """See ``Repository.release_update``."""
        for snap in self._stream(self._col("users").where(
                filter=FieldFilter("recent_updates", "array_contains", update_id))):
            entry = (snap.to_dict().get("claims") or {}).get(docs.claim_key(update_id)) or {}
            if owner is not None and entry.get("owner") not in (None, owner):
                continue  # taken over by another attempt since: theirs now
            snap.reference.update({"recent_updates": firestore.ArrayRemove([update_id]),
                                   "claims." + docs.claim_key(update_id): firestore.DELETE_FIELD},
                                  **WRITE)
        self._col("claims").document(str(update_id)).delete(**WRITE)

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
            return docs.user_state(user_id, {**doc, "language": language})

        return retrying("set_language", attempt)

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

        return retrying("user update", attempt)

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        self._set_flags(user_id, {"blocked": blocked}, leave_lobby=blocked)

    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        self._set_flags(user_id, {"analytics_opt_out": opt_out})

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        answer = {"age_answer": age_gate.answer(confirmed), "age_answered_at": now}
        if not update_guarded(self.client, self._user(user_id), lambda doc: answer if (
                age_gate.replaces(doc.get("age_answer"), confirmed)) else None) and not confirmed:
            with contextlib.suppress(gexc.AlreadyExists):  # an erased user's refusal
                self._user(user_id).create(docs.refusal_marker_document(user_id, now), **WRITE)

    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        self._set_flags(user_id, {"reminders_off": not enabled})

    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        return self._set_flags(user_id, {"banned": banned}, leave_lobby=banned)

    # -- privacy -------------------------------------------------------------------------

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        user, entry = self._get(self._user(user_id), self._entry(user_id))
        if not user.exists:
            return None
        def where(collection: str, *conditions: tuple[str, Any]) -> Any:
            query = self._col(collection)
            for field_name, value in conditions:
                query = query.where(filter=FieldFilter(field_name, "==", value))
            return self._stream(query)

        return docs.user_records(
            user_id, user.to_dict(), entry.to_dict() if entry.exists else None,
            ((int(snap.id), snap.to_dict()) for snap in self._chats_of(user_id)),
            (snap.to_dict() for end, role in (("sender_id", "sent"), ("recipient_id", "copy"))
             for snap in where("links", (end, user_id), ("role", role))),
            (snap.to_dict() for end in ("user_id", "other_id")
             for snap in where("exclusions", (end, user_id))),
            ((int(snap.id), snap.to_dict()) for end in ("reporter_id", "reported_id")
             for snap in where("reports", (end, user_id))),
            ((snap.id, snap.to_dict()) for snap in where("albums", ("sender_id", user_id))))

    def _docs(self, query: Any) -> Iterator[dict[str, Any]]:
        return (snap.to_dict() for snap in self._stream(query))

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

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``."""
        counts = {"messages": 0, "exclusions": 0, "lobby": 0, "chats_anonymised": 0}

        def erase() -> tuple[int, int, int]:
            user, entry = self._get(self._user(user_id), self._entry(user_id))
            batch = self._guarded(user, entry)
            batch.delete(entry.reference)
            banned = user.exists and bool(user.to_dict().get("banned"))
            if banned:  # a ban outlives erasure (domain.erasure): only the remnant stays
                batch.replace(user.reference, docs.remnant_document(user_id))
            else:
                batch.delete(user.reference)
            batch.commit()
            return int(entry.exists), int(banned), int(user.exists and not banned)

        # First out of the lobby and the users, in one guarded commit: from then on no
        # search can pair them, so the chats below are all there will ever be.
        counts["lobby"], counts["kept_for_ban"], counts["profile"] = retrying("erase", erase)
        for field_name in ("sender_id", "recipient_id"):
            counts["messages"] += self._delete_all(self._col("links").where(
                filter=FieldFilter(field_name, "==", user_id)), count_role="sent")
        counts["messages"] += self._delete_all(self._col("albums").where(  # on their way
            filter=FieldFilter("sender_id", "==", user_id)))
        stones, key = Tombstones(), protection_key(self._pepper, user_id)
        counts["exclusions"] += self._delete_all(self._col("exclusions").where(
            filter=FieldFilter("user_id", "==", user_id)))
        for snap in self._stream(self._col("exclusions").where(
                filter=FieldFilter("other_id", "==", user_id))):
            # Others' protections stay (domain.erasure), under an id without the erased one.
            kept = docs.kept_exclusion(snap.to_dict(), stones.of(int(snap.get("user_id"))), key)
            batch = self.client.batch()
            batch.set(self._col("exclusions").document(docs.exclusion_id(kept)), kept)
            batch.delete(snap.reference)
            batch.commit(**WRITE)
        for snap in self._chats_of(user_id):
            counts["chats_anonymised"] += update_guarded(self.client, snap.reference,
                lambda doc: docs.anonymised_chat(
                    doc, user_id, stones.of(docs.partner_of(doc, user_id)), key))
        for snap in self._stream(self._col("users").where(
                filter=FieldFilter("chat.partner", "==", user_id))):
            update_guarded(self.client, snap.reference, lambda doc: {"chat": None} if (
                doc.get("chat") or {}).get("partner") == user_id else None)
        for snap in self._stream(self._col("reports").where(
                filter=FieldFilter("reporter_id", "==", user_id))):
            update_guarded(self.client, snap.reference, lambda doc: {
                "reporter_id": stones.of(int(doc["reported_id"]))}
                if doc.get("reporter_id") == user_id else None)
        for snap in self._stream(self._col("reports").where(
                filter=FieldFilter("reported_id", "==", user_id))):
            update_guarded(self.client, snap.reference, lambda doc: docs.kept_report(
                stones.of(int(doc["reporter_id"])), key)
                if doc.get("reported_id") == user_id else None)
        for snap in self._stream(self._col("lobby").where(
                filter=FieldFilter("avoid", "array_contains", user_id))):
            with contextlib.suppress(gexc.NotFound):  # matched or left meanwhile
                snap.reference.update({"avoid": firestore.ArrayRemove([user_id])}, **WRITE)
        return counts

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
            batch.commit(**WRITE)

    @unavailable_as_storage_error
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
        more = {kind: [s.reference for s in itertools.islice((  # a ban stays on its report
            s for s in self._stream(query) if not outlives_period(
                (s.to_dict() or {}).get("ban_on_return"))), limit)]
                for kind, query in self._expired(now, retention).items()}
        self._delete_refs([ref for pair in messages.values() for ref in pair]
                          + claim_refs + chat_refs + [r for refs in more.values() for r in refs])
        return {"messages": len(messages), "claims": len(claim_refs), "chats": len(chat_refs),
                **{kind: len(refs) for kind, refs in more.items()}}

    def _expired(self, now: float, retention: Retention) -> dict[str, Any]:
        """The queries of the kinds deleted whole, by kind (``purge_expired``)."""
        def older(collection: str, field: str, period_s: float) -> Any:
            return self._col(collection).where(filter=FieldFilter(field, "<", now - period_s))
        return {"reports": older("reports", "created_at", retention.reports_s),
                "exclusions": older("exclusions", "created_at", retention.exclusions_s),
                "age_refusals": older("users", "age_answered_at", retention.age_refusals_s)
                .where(filter=FieldFilter("age_answer", "==", "no"))
                .where(filter=FieldFilter("banned", "==", False))}

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.idle_chats``: users long unseen in a chat, then their partners."""
        found: dict[int, tuple[int, str]] = {}
        for snap in self._stream(self._col("users").where(filter=FieldFilter(
                "last_seen", "<", cut.active_before)).where(filter=FieldFilter(
                "chat.started_at", ">", 0)).order_by("last_seen").order_by("chat.started_at")
                .limit(_IDLE_SCAN * limit)):
            doc = snap.to_dict()
            (partner,) = self._get(self._user(int(doc["chat"]["partner"])))
            if partner.exists and chat_idle((doc["last_seen"], partner.get("last_seen")),
                                            cut.active_before):
                found.setdefault(int(doc["chat"]["id"]), (int(snap.id), doc["language"]))
            if len(found) >= limit:
                break
        return list(found.values())

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_inactivity_notices``: each by one guarded commit."""
        def claim(snap: Any) -> tuple[int, str] | None:
            doc = snap.to_dict()
            if not notice_due(AccountStatus.of(docs.stored_profile(int(snap.id), doc, None)),
                              cut) or not commit_unless_beaten(
                    self.client, snap, {"notice_pending": False, "noticed_at": now}):
                return None
            return int(snap.id), str(doc["language"])

        return claim_each(self._col("users").where(filter=FieldFilter(
            "notice_pending", "==", True)).where(filter=FieldFilter("banned", "==", False))
            .where(filter=FieldFilter("last_seen", "<", cut.notice_seen_before))
            .order_by("last_seen"), limit, claim)

    def inactive_accounts(self, cut: Cutoffs, limit: int) -> list[int]:
        """See ``Repository.inactive_accounts``."""
        return [int(snap.id) for snap in self._stream(self._col("users").where(
            filter=FieldFilter("notice_pending", "==", False)).where(
            filter=FieldFilter("banned", "==", False)).where(
            filter=FieldFilter("noticed_at", "<", cut.noticed_before)).order_by(
            "noticed_at").limit(limit)) if erasure_due(AccountStatus.of(
                docs.stored_profile(int(snap.id), snap.to_dict(), None)), cut)]

    def _delete_refs(self, refs: list[Any]) -> None:
        """Delete the documents ``refs`` (absent ones too), a batch per _PURGE_BATCH."""
        for start in range(0, len(refs), _PURGE_BATCH):
            batch = self.client.batch()
            for ref in refs[start:start + _PURGE_BATCH]:
                batch.delete(ref)
            batch.commit(**WRITE)

    # -- moderation ----------------------------------------------------------------------

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        for snap in self._latest_chats(user_id, 1):
            return docs.chat_record(int(snap.id), snap.to_dict(), user_id)
        return None

    def chat_of(self, user_id: int, chat_id: int) -> ChatRecord | None:
        """See ``Repository.chat_of``."""
        (snap,) = self._get(self._chat(chat_id))
        doc = snap.to_dict() if snap.exists else {}
        return docs.chat_record(chat_id, doc, user_id) if user_id in doc.get("users", ()) \
            else None

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        query = (self._col("links").where(filter=FieldFilter("chat_id", "==", chat_id))
                 .where(filter=FieldFilter("sender_id", "==", sender_id))
                 .where(filter=FieldFilter("role", "==", "sent"))
                 .order_by("sender_message_id", direction=firestore.Query.DESCENDING)
                 .limit(limit))
        return sorted(int(snap.get("sender_message_id")) for snap in self._stream(query))

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """See ``Repository.add_report``; ids are random, so no counter document is hot."""
        for _ in self._stream(self._col("reports").where(
                filter=FieldFilter("reporter_id", "==", reporter_id)).where(
                filter=FieldFilter("chat_id", "==", chat_id)).limit(1)):
            return None
        report = Report(secrets.randbelow(10**9) + 1, reporter_id, reported_id, chat_id,
                        reason, now, "open")
        self._col("reports").document(str(report.report_id)).create(
            docs.report_document(report, reported_key), **WRITE)
        return report

    def resolve_report(self, report_id: int, status: str) -> Report | None:
        """See ``Repository.resolve_report``: the open -> status change is won once."""
        def attempt() -> Report | None:
            (snap,) = self._get(self._col("reports").document(str(report_id)))
            if not snap.exists or snap.get("status") != "open":
                return None
            batch = self._guarded(snap)
            batch.put(snap.reference, {"status": status})
            batch.commit()
            return docs.report(report_id, {**snap.to_dict(), "status": status})

        return retrying("resolve_report", attempt)

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

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: each user claimed by one guarded commit."""
        query = (self._due(idle_before).where(filter=FieldFilter("blocked", "==", False))
                 .where(filter=FieldFilter("banned", "==", False))
                 .where(filter=FieldFilter("reminders_off", "==", False))
                 .order_by("last_seen"))
        return claim_each(query, limit,
                          lambda snap: self._claim_nudge(snap, idle_before, now))

    def _claim_nudge(self, snap: Any, idle_before: float, now: float) -> Nudge | None:
        """Claim the user the query found if the rule, applied to what was read, agrees."""
        if not claimable(docs.nudge_status(int(snap.id), snap.to_dict()), idle_before):
            return None
        claimed = {"nudge_pending": False, "reminded_at": now}
        if not commit_unless_beaten(self.client, snap, claimed):
            return None  # another run claimed them, or they wrote since: not due now
        return docs.nudge(int(snap.id), snap.to_dict())

    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        self._set_flags(user_id, {"nudge_pending": True})

    def release_inactivity_notice(self, user_id: int) -> None:
        """See ``Repository.release_inactivity_notice``."""
        self._set_flags(user_id, {"notice_pending": True})

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
            except CONFLICTS:
                continue  # matched, moved or left meanwhile: not this run's to expire
            expired.append((user_id, str(entry.get("language"))))
        return expired

    # -- the lobby and chats -------------------------------------------------------------

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        counts: dict[int, int] = {}
        for snap in self._stream(self._col("links").where(
                filter=FieldFilter("chat_id", "==", chat_id)).where(
                filter=FieldFilter("role", "==", "sent"))):
            sender = int(snap.get("sender_id"))
            counts[sender] = counts.get(sender, 0) + 1
        return counts

    def note_newest(self, user_id: int, message_id: int) -> None:
        """See ``Repository.note_newest``."""
        update_guarded(self.client, self._user(user_id), lambda doc: (
            {"newest_message": message_id}
            if message_id > int(doc.get("newest_message") or 0) else None))

    def rate_user(self, rated_id: int, chat_id: int, positive: bool, now: float,
                  rule: RatingRule) -> RatingVerdict:
        """See ``Repository.rate_user``: committed only if the user is still as read."""
        verdicts = [RatingVerdict(counted=False)]

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            state, verdicts[0] = rate(docs.rating_state(doc.get("ratings")), chat_id,
                                      positive, now, rule)
            return {"ratings": docs.rating_document(state)} if verdicts[0].counted else None

        update_guarded(self.client, self._user(rated_id), change)
        return verdicts[0]

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """See ``Repository.exclude_pair``; waiting entries learn of it at once."""
        with contextlib.suppress(gexc.AlreadyExists):
            self._col("exclusions").document(f"{user_id}:{other_id}").create(
                docs.exclusion_document(user_id, other_id, reason, now, other_key), **WRITE)
        for waiting, avoided in ((user_id, other_id), (other_id, user_id)):
            # ArrayUnion is applied by the server: no read, no lost update. NotFound: the
            # user is not waiting.
            with contextlib.suppress(gexc.NotFound):
                self._entry(waiting).update({"avoid": firestore.ArrayUnion([avoided])},
                                            **WRITE)

    def ban_erased(self, report_id: int) -> list[int] | None:
        """See ``Repository.ban_erased``."""
        (report,) = self._get(self._col("reports").document(str(report_id)))
        key = (report.to_dict() or {}).get("reported_key")  # a report may hold none
        if not key:
            return None
        report.reference.update({"ban_on_return": True}, **WRITE)
        return [user_id for user_id in returned(
            self._pepper, key, (int(e.id) for e in self._stream(self._col("lobby"))))
            if self.set_banned(user_id, banned=True)]

    def apply_erased_ban(self, user_id: int) -> bool:
        """See ``Repository.apply_erased_ban``."""
        for _ in self._stream(self._col("reports").where(filter=FieldFilter(
                "reported_key", "==", protection_key(self._pepper, user_id))).where(
                filter=FieldFilter("ban_on_return", "==", True)).limit(1)):
            return self.set_banned(user_id, banned=True)
        return False

    def _avoided_by(self, user_id: int, recent_partners: int) -> frozenset[int]:
        """The user's recent partners and everyone excluded in either direction."""
        chats = self._latest_chats(user_id, recent_partners) if recent_partners > 0 else ()
        key = protection_key(self._pepper, user_id)
        return matching.avoided(
            user_id, matching.recent_partners(
                user_id, ([int(u) for u in snap.get("users")] for snap in chats),
                recent_partners),
            (docs.exclusion(d) for field_name, value in (
                ("user_id", user_id), ("other_id", user_id), ("other_key", key))
             for d in self._docs(self._col("exclusions").where(
                 filter=FieldFilter(field_name, "==", value)))), key)

    def _candidates(self, seeker: matching.Seeker,
                    joined_before: tuple[datetime, str] | None = None) -> Iterator[Any]:
        """Compatible lobby entries of the seeker's pool, in the order to take them.

        Read a page at a time, longest waiting first; ``joined_before``: only entries
        created before this (time, id).
        """
        query = self._col("lobby").where(
            filter=FieldFilter("language", "==", seeker.pool)).order_by("since").order_by(
            "__name__")
        last = None
        while True:
            page = list(self._stream((query.start_after(last) if last else query)
                                     .limit(_PAGE)))
            entries = {int(e.id): e for e in page if joined_before is None
                       or (e.create_time, e.id) < joined_before}
            for chosen in matching.ranked(seeker, (docs.candidate(user_id, e.to_dict())
                                                   for user_id, e in entries.items())):
                yield entries[chosen.user_id]
            if len(page) < _PAGE:
                return
            last = page[-1]

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
            in_chat = self._in_chat(user, update_id) or age_gate.refused_search(
                age_gate.refuses(user.to_dict().get("age_answer")))
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
            seeker = matching.Seeker(user_id, pool, avoid)
            for candidate in self._candidates(seeker):
                matched = self._pair(seeker, candidate, now, update_id, own_entry=None)
                if matched is not None:
                    return matched
            if not entry.exists:
                batch = self._guarded(user, entry)
                batch.put(entry.reference, docs.lobby_document(
                    pool, now, avoid, offered=pool == matching.ANY_LANGUAGE))
                batch.put(user.reference, {"waiting_since": now})
                joined_at = batch.commit()[0].update_time
                joined = True
                for candidate in self._candidates(seeker, joined_before=(joined_at, entry.id)):
                    matched = self._pair(seeker, candidate, now, update_id,
                                         own_entry=joined_at)
                    if matched is not None:
                        return matched
            return matching.queued(bool(was_waiting), self._count(self._col("lobby").where(
                filter=FieldFilter("language", "==", pool))))

        return retrying("find_partner", attempt)

    def _pair(self, seeker: matching.Seeker, candidate: Any, now: float, update_id: int,
              own_entry: datetime | None) -> MatchResult | None:
        """Make a chat with ``candidate`` if both are still free; None if the entry is gone.

        ``own_entry``: the searcher joined the lobby at this time and must still be there
        (if someone took them meanwhile, that instance announces the chat).
        """
        user_id, partner_id = seeker.user_id, int(candidate.id)
        me, them, their_entry, my_entry = self._get(
            self._user(user_id), self._user(partner_id), self._entry(partner_id),
            self._entry(user_id))
        if own_entry is not None and not my_entry.exists:
            # Someone took the searcher from the lobby after they joined; the instance
            # that did announces the chat to both.
            return MatchResult(MatchOutcome.WAITING, waiting_count=1)
        if me.to_dict().get("chat"):
            raise ConflictError  # someone paired the searcher: decide again from the top
        if not (their_entry.exists and them.exists and not them.to_dict().get("chat")
                and matching.compatible(seeker, docs.candidate(
                    partner_id, their_entry.to_dict(), them.to_dict()))):
            return None
        chat_id = secrets.randbits(62)
        partner_language = str(them.get("language"))
        my_language = str(me.get("language"))
        batch = self._guarded(me, them, their_entry, my_entry)
        batch.put(self._chat(chat_id), docs.chat_document(
            [partner_id, user_id], seeker.pool, now, update_id))
        for ref, partner, language in ((me.reference, partner_id, partner_language),
                                       (them.reference, user_id, my_language)):
            batch.put(ref, {"chat": docs.chat_field(chat_id, partner, language, now),
                            "waiting_since": None})
        batch.delete(their_entry.reference)
        batch.delete(my_entry.reference)
        batch.commit()
        return MatchResult(MatchOutcome.MATCHED,
                           ActiveChat(chat_id, partner_id, partner_language, now),
                           partner_waiting_since=their_entry.get("since"))

    def _in_chat(self, user: Any, update_id: int) -> MatchResult | None:
        chat = docs.active_chat(user.to_dict())
        if chat is None:
            return None
        (record,) = self._get(self._chat(chat.chat_id))
        return matching.resume_search(
            chat, record.get("opened_by_update") if record.exists else None, update_id)

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

        return retrying("join_any_language", attempt)

    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_language_offers``: each entry claimed by a guarded commit."""
        query = (self._col("lobby").where(filter=FieldFilter("offered", "==", False))
                 .where(filter=FieldFilter("since", "<", waiting_before)).order_by("since"))
        return claim_each(query, limit, lambda entry: (
            (int(entry.id), str(entry.get("language")))
            if commit_unless_beaten(self.client, entry, {"offered": True}) else None))

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

        return retrying("leave_lobby", attempt)

    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``: the chat's null ``ended_at`` is won once."""
        return retrying("end_chat", lambda: self._end_chat_once(user_id, reason, now,
                                                                 update_id))

    def _end_chat_once(self, user_id: int, reason: EndReason, now: float,
                       update_id: int) -> EndedChat | None:
        (user,) = self._get(self._user(user_id))
        chat = user.to_dict().get("chat") if user.exists else None
        if not chat:
            return self._ended_by(user_id, update_id)
        chat_id, partner_id = int(chat["id"]), int(chat["partner"])
        record, partner = self._get(self._chat(chat_id), self._user(partner_id))
        if record.exists and record.get("ended_at") is None and not matching.may_end(
                reason, record.get("opened_by_update"), update_id):
            return self._ended_by(user_id, update_id)  # this update opened it: resume
        batch = self._guarded(user, record, partner)
        batch.put(user.reference, {"chat": None})
        partner_in_it = partner.exists and (partner.get("chat") or {}).get("id") == chat_id
        if partner_in_it:
            batch.put(partner.reference, {"chat": None})
        partner_language = str(partner.get("language")) if partner.exists else "en"
        if record.exists and record.get("ended_at") is None:
            batch.put(record.reference, docs.ended_fields(
                user_id, reason, now, update_id, docs.utc(now) + self._chat_retention))
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

    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``: one commit of two documents.

        The link is stored under both ends' (chat, message) ids, so that finding a reply's
        target is one document read from either side.
        """
        fields = docs.link_document(link, docs.utc(link.sent_at) + self._message_retention)
        batch = self.client.batch()
        batch.set(self._link_ref(link.sender_id, link.sender_message_id),
                  {**fields, "role": "sent"})
        batch.set(self._link_ref(link.recipient_id, link.copy_message_id),
                  {**fields, "role": "copy"})
        batch.commit(**WRITE)

    def _link_ref(self, user_id: int, message_id: int) -> Any:
        return self._col("links").document(f"{user_id}:{message_id}")

    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``: one document read."""
        (snap,) = self._get(self._link_ref(user_id, message_id))
        if not snap.exists or snap.get("chat_id") != chat_id:
            return None
        return docs.message_link(snap.to_dict())

    def change_album(self, key: str, rule: Callable[[Album | None], tuple[Album | None, T]]
                     ) -> T:
        """See ``Repository.change_album``: one read, one commit guarded by it."""
        ref = self._col("albums").document(key)

        def attempt() -> T:
            (snap,) = self._get(ref)
            album, answer = rule(docs.album(key, snap.to_dict()) if snap.exists else None)
            if album is not None:
                batch = Guarded(self.client, [snap])
                batch.put(ref, docs.album_document(album, docs.utc(albums.expires_at(album))))
                batch.commit()
            return answer

        return retrying("album", attempt)

    # -- statistics ----------------------------------------------------------------------

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
