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
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
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
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.nudges import claimable
from messagine.domain.retention import Cutoffs, notice_due
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
from messagine.storage.firestore_commit import (
    CALL,
    CONFLICTS,
    WRITE,
    ConflictError,
    Guarded,
    claim_each,
    commit_unless_beaten,
    optimistic,
    unavailable_as_storage_error,
    update_guarded,
)
from messagine.storage.port import wrap_public_methods
from messagine.storage.shared import DocumentOperations

_PAGE = 50
T = TypeVar("T")
_PURGE_BATCH = 400  # a commit takes at most 500 writes
_NAMES = {"message_links": "links", "claimed_updates": "claims"}
"""The collections named otherwise here than in the shared declarations (``documents``)."""


@wrap_public_methods(unavailable_as_storage_error)
class FirestoreRepository(DocumentOperations):
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
        return self.client.collection(_NAMES.get(name, name))

    def _doc(self, collection: str, key: object) -> Any:
        return self._col(collection).document(str(key))

    def _get(self, *refs: Any) -> list[Any]:
        """Read documents in one round trip, in the order asked."""
        found = {snap.reference.path: snap
                 for snap in self.client.get_all(list(refs), **CALL)}
        return [found[ref.path] for ref in refs]

    def _stream(self, query: Any) -> Iterator[Any]:
        return query.stream(**CALL)  # type: ignore[no-any-return]

    def _where(self, query: Any, *filters: docs.Filter) -> Any:
        """``query`` (or the collection of that name) narrowed by ``filters``."""
        query = self._col(query) if isinstance(query, str) else query
        for field_name, operator, value in filters:
            query = query.where(filter=FieldFilter(field_name, operator, value))
        return query

    def _count(self, query: Any, filters: tuple[docs.Filter, ...]) -> int:
        return int(self._where(query, *filters).count().get(**CALL)[0][0].value)

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

    # -- updates and users ---------------------------------------------------------------

    @optimistic
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
            return OpenedUpdate(duplicate=not self._create("claims", update_id, {
                "claimed_at": now, "expires_at": docs.utc(now) + self._update_retention}))
        (snap,) = self._get(self._doc("users", profile.user_id))
        doc = snap.to_dict() if snap.exists else {}
        if doc.get("banned"):
            return self._claimed_alone(update_id, profile.user_id, doc, now)
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
            self._doc("users", user_id).update(
                {"claims." + docs.claim_key(update_id): firestore.DELETE_FIELD}, **WRITE)

    def release_update(self, update_id: int, owner: str | None = None) -> None:
        """See ``Repository.release_update``."""
        for snap in self._stream(self._where("users",
                                             ("recent_updates", "array_contains", update_id))):
            entry = (snap.to_dict().get("claims") or {}).get(docs.claim_key(update_id)) or {}
            if owner is not None and entry.get("owner") not in (None, owner):
                continue  # taken over by another attempt since: theirs now
            snap.reference.update({"recent_updates": firestore.ArrayRemove([update_id]),
                                   "claims." + docs.claim_key(update_id): firestore.DELETE_FIELD},
                                  **WRITE)
        self._doc("claims", update_id).delete(**WRITE)

    @optimistic
    def set_language(self, user_id: int, language: str) -> UserState:
        """See ``Repository.set_language``: the user and their lobby entry change together."""
        user, entry = self._get(self._doc("users", user_id), self._doc("lobby", user_id))
        if not user.exists:
            raise LookupError(f"unknown user {user_id}")
        doc = user.to_dict()
        if doc.get("chat") or doc["language"] == language:
            return docs.user_state(user_id, doc)
        batch = self._guarded(user, entry)
        batch.put(user.reference, {"language": language})
        if entry.exists:
            batch.put(entry.reference, {"language": language})
        batch.commit()
        return docs.user_state(user_id, {**doc, "language": language})

    @optimistic
    def _set_fields(self, user_id: int, fields: Mapping[str, Any], *,
                    leave_lobby: bool = False) -> tuple[bool, bool]:
        """Set fields of a user, optionally leaving the lobby; whether user and entry were.

        An unknown user's fields are not set.
        """
        user, entry = self._get(self._doc("users", user_id), self._doc("lobby", user_id))
        batch = self._guarded(user, entry)
        changes = dict(fields)
        if leave_lobby and entry.exists:
            batch.delete(entry.reference)
            if user.exists and not user.to_dict().get("chat"):
                changes["waiting_since"] = None
        if user.exists and changes:
            batch.put(user.reference, changes)
        batch.commit()
        return user.exists, entry.exists

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        answer = {"age_answer": age_gate.answer(confirmed), "age_answered_at": now}
        if not update_guarded(self.client, self._doc("users", user_id), lambda doc: answer if (
                age_gate.replaces(doc.get("age_answer"), confirmed)) else None) and not confirmed:
            self._create("users", user_id,  # an erased user's refusal leaves the marker
                         docs.refusal_marker_document(user_id, now))

    # -- privacy -------------------------------------------------------------------------

    def _change(self, collection: str, key: Any, reads: tuple[str, ...],
                change: Callable[[dict[str, Any]], Mapping[str, Any] | None]
                ) -> dict[str, Any] | None:
        """Guarded by the whole document's update time, whatever ``reads`` names."""
        del reads
        return update_guarded(self.client, self._doc(collection, key), change)

    def _create(self, collection: str, key: Any, doc: Mapping[str, Any]) -> bool:
        try:
            self._doc(collection, key).create(dict(doc), **WRITE)
        except gexc.AlreadyExists:
            return False
        return True

    def _move(self, collection: str, key: Any, new_key: Any, doc: Mapping[str, Any]) -> None:
        batch = self.client.batch()
        batch.set(self._doc(collection, new_key), dict(doc))
        batch.delete(self._doc(collection, key))
        batch.commit(**WRITE)

    def _array_change(self, collection: str, key: Any, field: str, value: int, *,
                      add: bool) -> None:
        # Applied by the server: no read, no lost update. NotFound: no such document (in
        # the lobby: the user is not waiting, or was matched meanwhile).
        with contextlib.suppress(gexc.NotFound):
            self._doc(collection, key).update(
                {field: (firestore.ArrayUnion if add else firestore.ArrayRemove)([value])},
                **WRITE)

    @optimistic
    def _erase_profile(self, user_id: int, finishing: bool = False) -> dict[str, int] | None:
        """Take the user out of the lobby and delete their document (a ban keeps a remnant)."""
        user, entry = self._get(self._doc("users", user_id), self._doc("lobby", user_id))
        if finishing and docs.came_back(user.to_dict() if user.exists else None):
            return None  # back since the erasure was cut short: their account stays
        batch = self._guarded(user, entry)
        batch.delete(entry.reference)
        banned = user.exists and bool(user.to_dict().get("banned"))
        # A ban outlives erasure (domain.erasure): only the remnant stays; an age
        # refusal only its marker.
        kept = docs.kept_profile(user_id, user.to_dict() if user.exists else None)
        if kept is not None:
            batch.replace(user.reference, kept)
        else:
            batch.delete(user.reference)
        batch.commit()
        return {"lobby": int(entry.exists), "kept_for_ban": int(banned),
                "profile": int(user.exists and not banned)}

    def _delete_where(self, collection: str, condition: docs.Filter) -> int:
        """Delete what ``condition`` selects, in batches; a message's copy is not counted."""
        query, deleted = self._where(collection, condition), 0
        while snaps := list(self._stream(query.limit(_PURGE_BATCH))):
            self._delete_refs([snap.reference for snap in snaps])
            deleted += sum(snap.to_dict().get("role") != "copy" for snap in snaps)
        return deleted

    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``.

        The TTL policies (docs/storage.md) delete the same documents, but only within
        about a day of expiry; this keeps the published retention. A message is two
        documents (one per end) with the same ``sent_at``; both go, and count once.
        """
        links = self._where("links", ("sent_at", "<", now - retention.messages_s))
        messages: dict[tuple[int, int], list[Any]] = {}
        for snap in self._stream(links.limit(2 * limit)):
            doc = snap.to_dict()
            key = (int(doc["sender_id"]), int(doc["sender_message_id"]))
            if key not in messages and len(messages) < limit:
                messages[key] = [self._link_ref(*key), self._link_ref(
                    int(doc["recipient_id"]), int(doc["copy_message_id"]))]
        more = {kind: self._refs(collection, filters, limit)
                for kind, collection, filters in docs.expired(now, retention)
                if kind != "messages"}
        self._delete_refs([ref for pair in messages.values() for ref in pair]
                          + [ref for refs in more.values() for ref in refs])
        return {"messages": len(messages), **{kind: len(refs) for kind, refs in more.items()}}

    def _refs(self, collection: str, filters: tuple[docs.Filter, ...], limit: int) -> list[Any]:
        """At most ``limit`` documents that the ``filters`` select.

        Firestore's "!=" leaves out the documents without the field, so it is checked on
        each document read instead.
        """
        unequal = [(name, value) for name, operator, value in filters if operator == "!="]
        query = self._where(collection, *(f for f in filters if f[1] != "!="))
        found = (snap for snap in self._stream(query if unequal else query.limit(limit))
                 if all((snap.to_dict() or {}).get(name) != value for name, value in unequal))
        return [snap.reference for snap in itertools.islice(found, limit)]

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.idle_chats``: users long unseen in a chat, then their partners."""
        users = self._where("users", ("last_seen", "<", cut.active_before),
                            ("chat.started_at", ">", 0)).order_by("last_seen").order_by(
                                "chat.started_at").limit(docs.IDLE_SCAN * limit)
        return docs.idle_chats(((int(snap.id), snap.to_dict()) for snap in self._stream(users)),
                               lambda partner: (self._document("users", partner) or {}).get(
                                   "last_seen"), cut, limit)

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_inactivity_notices``: each by one guarded commit."""
        def claim(snap: Any) -> tuple[int, str] | None:
            doc = snap.to_dict()
            if not notice_due(docs.account(int(snap.id), doc), cut) or not commit_unless_beaten(
                    self.client, snap, {"notice_pending": False, "noticed_at": now}):
                return None
            return int(snap.id), str(doc["language"])

        return claim_each(self._where("users", *docs.notice_candidates(cut)).order_by(
            "last_seen"), limit, claim)

    def _first(self, collection: str, filters: Iterable[docs.Filter], order: str,
               limit: int) -> Iterator[tuple[Any, dict[str, Any]]]:
        return ((snap.id, snap.to_dict()) for snap in self._stream(self._where(
            collection, *filters).order_by(order).limit(limit)))

    def _delete_refs(self, refs: list[Any]) -> None:
        """Delete the documents ``refs`` (absent ones too), a batch per _PURGE_BATCH."""
        for start in range(0, len(refs), _PURGE_BATCH):
            batch = self.client.batch()
            for ref in refs[start:start + _PURGE_BATCH]:
                batch.delete(ref)
            batch.commit(**WRITE)

    # -- moderation ----------------------------------------------------------------------

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        query = self._where("links", ("chat_id", "==", chat_id), ("sender_id", "==", sender_id),
                            ("role", "==", "sent")).order_by(
            "sender_message_id", direction=firestore.Query.DESCENDING).limit(limit)
        return sorted(int(snap.get("sender_message_id")) for snap in self._stream(query))

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """See ``Repository.add_report``: one create, once per reporter and chat."""
        for _ in self._stream(self._where("reports", ("reporter_id", "==", reporter_id),
                                          ("chat_id", "==", chat_id)).limit(1)):
            return None
        report = docs.new_report(reporter_id, reported_id, chat_id, reason, now)
        self._doc("reports", report.report_id).create(
            docs.report_document(report, reported_key), **WRITE)
        return report

    # -- reminders -----------------------------------------------------------------------

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: each user claimed by one guarded commit."""
        query = self._where("users", *docs.nudge_due(idle_before), ("blocked", "==", False),
                            ("banned", "==", False), ("reminders_off", "==", False)
                            ).order_by("last_seen")
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

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``: each entry removed by one guarded commit."""
        expired: list[tuple[int, str]] = []
        for entry in list(self._stream(self._where("lobby", ("since", "<", waiting_before))
                                       .order_by("since").limit(limit))):
            user_id = int(entry.id)
            (user,) = self._get(self._doc("users", user_id))
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
        return dict(Counter(int(snap.get("sender_id")) for snap in self._stream(self._where(
            "links", ("chat_id", "==", chat_id), ("role", "==", "sent")))))

    def _waiting(self) -> Iterator[int]:
        return (int(entry.id) for entry in self._stream(self._col("lobby")))

    def _any_of(self, collection: str,
                filters: Iterable[docs.Filter]) -> Iterator[tuple[Any, dict[str, Any]]]:
        return ((snap.id, snap.to_dict()) for condition in filters
                for snap in self._stream(self._where(collection, condition)))

    def _document(self, collection: str, key: Any) -> dict[str, Any] | None:
        (snap,) = self._get(self._doc(collection, key))
        return snap.to_dict() if snap.exists else None

    def _latest_chats(self, user_id: int, limit: int) -> Iterator[tuple[int, dict[str, Any]]]:
        descending = firestore.Query.DESCENDING
        return ((int(snap.id), snap.to_dict()) for snap in self._stream(
            self._where("chats", ("users", "array_contains", user_id))
            .order_by("started_at", direction=descending)
            .order_by("opened_by_update", direction=descending).limit(limit)))

    def _take(self, seeker: matching.Seeker, now: float, update_id: int,
              joined_before: tuple[datetime, str] | None = None) -> MatchResult | None:
        """Pair the seeker with the first compatible lobby entry of their pool still there.

        Read a page at a time, longest waiting first; ``joined_before``: the seeker's own
        entry (time, id), which must still be there: only entries created before it count.
        """
        query = self._where("lobby", ("language", "==", seeker.pool)).order_by(
            "since").order_by("__name__")
        last = None
        while True:
            page = list(self._stream((query.start_after(last) if last else query)
                                     .limit(_PAGE)))
            entries = {int(e.id): e for e in page if joined_before is None
                       or (e.create_time, e.id) < joined_before}
            for chosen in matching.ranked(seeker, (docs.candidate(user_id, e.to_dict())
                                                   for user_id, e in entries.items())):
                matched = self._pair(seeker, entries[chosen.user_id], now, update_id,
                                     joined_before and joined_before[0])
                if matched is not None:
                    return matched
            if len(page) < _PAGE:
                return None
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
            user, entry = self._get(self._doc("users", user_id), self._doc("lobby", user_id))
            if not user.exists:
                raise LookupError(f"unknown user {user_id}")
            in_chat = self._resumed_search(user.to_dict(), update_id)
            if in_chat is not None:
                if joined and not in_chat.resumed:
                    # Taken from the lobby after joining it in this call: the instance
                    # that took them announces the chat to both.
                    return MatchResult(MatchOutcome.WAITING, waiting_count=1)
                return in_chat
            if was_waiting is None:
                was_waiting = entry.exists
            pool = str(entry.get("language") if entry.exists else user.get("language"))
            avoid = self._avoided_by(user_id, recent_partners)
            seeker = matching.Seeker(user_id, pool, avoid)
            matched = self._take(seeker, now, update_id)
            if matched is None and not entry.exists:
                batch = self._guarded(user, entry)
                batch.put(entry.reference, docs.lobby_document(
                    pool, now, avoid, offered=pool == matching.ANY_LANGUAGE))
                batch.put(user.reference, {"waiting_since": now})
                joined_at = batch.commit()[0].update_time
                joined = True
                matched = self._take(seeker, now, update_id, joined_before=(joined_at, entry.id))
            return matched or matching.queued(bool(was_waiting),
                                              self._count("lobby", (("language", "==", pool),)))

        return optimistic(attempt)()

    def _pair(self, seeker: matching.Seeker, candidate: Any, now: float, update_id: int,
              own_entry: datetime | None) -> MatchResult | None:
        """Make a chat with ``candidate`` if both are still free; None if the entry is gone.

        ``own_entry``: the searcher joined the lobby at this time and must still be there
        (if someone took them meanwhile, that instance announces the chat).
        """
        user_id, partner_id = seeker.user_id, int(candidate.id)
        me, them, their_entry, my_entry = self._get(
            self._doc("users", user_id), self._doc("users", partner_id),
            self._doc("lobby", partner_id), self._doc("lobby", user_id))
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
        batch = self._guarded(me, them, their_entry, my_entry)
        batch.put(self._doc("chats", chat_id), docs.chat_document(
            [partner_id, user_id], seeker.pool, now, update_id))
        for ref, partner, language in ((me.reference, partner_id, partner_language),
                                       (them.reference, user_id, str(me.get("language")))):
            batch.put(ref, {"chat": docs.chat_field(chat_id, partner, language, now),
                            "waiting_since": None})
        batch.delete(their_entry.reference)
        batch.delete(my_entry.reference)
        batch.commit()
        return MatchResult(MatchOutcome.MATCHED,
                           ActiveChat(chat_id, partner_id, partner_language, now),
                           partner_waiting_since=their_entry.get("since"))

    @optimistic
    def join_any_language(self, user_id: int) -> bool:
        """See ``Repository.join_any_language``."""
        (entry,) = self._get(self._doc("lobby", user_id))
        if not entry.exists:
            return False
        if entry.get("language") != "*":
            batch = self._guarded(entry)
            batch.put(entry.reference, {"language": "*", "offered": True})
            batch.commit()
        return True

    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_language_offers``: each entry claimed by a guarded commit."""
        query = self._where("lobby", ("offered", "==", False),
                            ("since", "<", waiting_before)).order_by("since")
        return claim_each(query, limit, lambda entry: (
            (int(entry.id), str(entry.get("language")))
            if commit_unless_beaten(self.client, entry, {"offered": True}) else None))

    def leave_lobby(self, user_id: int) -> bool:
        """See ``Repository.leave_lobby``."""
        return self._set_fields(user_id, {}, leave_lobby=True)[1]

    @optimistic
    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``: the chat's null ``ended_at`` is won once."""
        (user,) = self._get(self._doc("users", user_id))
        chat = user.to_dict().get("chat") if user.exists else None
        if not chat:
            return self._ended_by(user_id, update_id)
        chat_id, partner_id = int(chat["id"]), int(chat["partner"])
        record, partner = self._get(self._doc("chats", chat_id), self._doc("users", partner_id))
        if record.exists and record.get("ended_at") is None and not matching.may_end(
                reason, record.get("opened_by_update"), update_id):
            return self._ended_by(user_id, update_id)  # this update opened it: resume
        batch = self._guarded(user, record, partner)
        batch.put(user.reference, {"chat": None})
        if partner.exists and (partner.get("chat") or {}).get("id") == chat_id:
            batch.put(partner.reference, {"chat": None})
        ends = record.exists and record.get("ended_at") is None
        if ends:  # else the partner ended it first, and this tidies our side
            batch.put(record.reference, docs.ended_fields(
                user_id, reason, now, update_id, docs.utc(now) + self._chat_retention))
        batch.commit()
        return matching.end_answer(
            chat_id, partner_id, str(partner.get("language")) if partner.exists else "en", ends,
            record.get("closed_by_update") if record.exists else None, update_id)

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

    @optimistic
    def change_album(self, key: str, rule: Callable[[Album | None], tuple[Album | None, T]]
                     ) -> T:
        """See ``Repository.change_album``: one read, one commit guarded by it."""
        (snap,) = self._get(self._doc("albums", key))
        album, answer = rule(docs.album(key, snap.to_dict()) if snap.exists else None)
        if album is not None:
            batch = self._guarded(snap)
            batch.put(snap.reference,
                      docs.album_document(album, docs.utc(albums.expires_at(album))))
            batch.commit()
        return answer

    # -- statistics ----------------------------------------------------------------------
