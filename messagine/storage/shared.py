"""The port operations the adapters perform alike, each written once over a few primitives.

``SharedOperations`` is what all three adapters do the same way: the flags, the counts,
the newest message, the bans on return, a rating, resolving a report, the inactive
accounts, the state of a user, the export, the last chat, a chat by its id, whom a
searcher avoids and a re-delivered ending, read as documents (``documents`` maps them;
SQLite reads its rows so). ``DocumentOperations`` adds what MongoDB and Firestore do
alike: erasure (and finishing one cut short), an exclusion, whether a search resumes
and a banned user's update claimed alone. Each operation stands on
primitives that the adapter gives, each one read or one write under the adapter's own
guard. They are declared as Protocols (``Primitives``, ``DocumentPrimitives``), which
the operations' classes subclass: an adapter that lacks one stays abstract, and mypy
refuses to make it. No driver is imported here.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from messagine.domain import age_gate, matching
from messagine.domain.erasure import Tombstones, protection_key, returned
from messagine.domain.ratings import RatingRule, RatingVerdict, rate
from messagine.domain.retention import Cutoffs, erasure_due
from messagine.models import (
    ChatRecord,
    Counts,
    EndedChat,
    MatchResult,
    ModerationStats,
    OpenedUpdate,
    Profile,
    Report,
    UserRecords,
    UserState,
)
from messagine.storage import documents as docs


class Primitives(Protocol):
    """What every adapter gives ``SharedOperations``."""

    _pepper: bytes

    def _set_fields(self, user_id: int, fields: Mapping[str, Any], *,
                    leave_lobby: bool = False) -> tuple[bool, bool]:
        """Set fields of a known user, and take them out of the lobby if asked.

        Whether the user was known, and whether they left the lobby.
        """
        ...

    def _count_each(self, queries: Mapping[str, docs.Query]) -> dict[str, int]:
        """Each query's count, by its name."""
        ...

    def _change(self, collection: str, key: Any, reads: tuple[str, ...],
                change: Callable[[dict[str, Any]], Mapping[str, Any] | None]
                ) -> dict[str, Any] | None:
        """Set the fields ``change`` gives for the document as it is now, under a guard.

        Written only if the fields named in ``reads`` (Firestore: the whole document) are
        still as read; else read and decide again (SQLite: one write transaction, whose
        lock keeps them so). The document as written; None if there is no such document,
        or ``change`` said None.
        """
        ...

    def _waiting(self) -> Iterable[int]:
        """The ids of the users in the lobby."""
        ...

    def _document(self, collection: str, key: Any) -> dict[str, Any] | None:
        """The document ``key`` of ``collection`` (None: there is none)."""
        ...

    def _any_of(self, collection: str,
                filters: Iterable[docs.Filter]) -> Iterable[tuple[Any, Mapping[str, Any]]]:
        """(id, document) of each document that one of the ``filters`` selects."""
        ...

    def _latest_chats(self, user_id: int, limit: int) -> Iterable[tuple[int, Mapping[str, Any]]]:
        """(id, document) of the user's newest chats (a chat made by a later update is newer)."""
        ...

    def _first(self, collection: str, filters: Iterable[docs.Filter], order: str,
               limit: int) -> Iterable[tuple[Any, dict[str, Any]]]:
        """(id, document) of the first ``limit`` that the ``filters`` select, by ``order``."""
        ...


class SharedOperations(Primitives):
    """The port operations every adapter performs the same way, over its primitives."""

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        self._set_fields(user_id, {"blocked": blocked}, leave_lobby=blocked)

    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        return self._set_fields(user_id, {"banned": banned}, leave_lobby=banned)[0]

    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        self._set_fields(user_id, {"analytics_opt_out": opt_out})

    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        self._set_fields(user_id, {"reminders_off": not enabled})

    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        self._set_fields(user_id, {"nudge_pending": True})

    def note_newest(self, user_id: int, message_id: int) -> None:
        """See ``Repository.note_newest``: the larger id wins."""
        self._change("users", user_id, ("newest_message",), lambda doc: {
            "newest_message": message_id} if message_id > int(doc.get("newest_message") or 0)
            else None)

    def counts(self, user_id: int) -> Counts:
        """See ``Repository.counts``."""
        return Counts(**self._count_each(docs.count_queries(user_id)))

    def moderation_stats(self, since: float) -> ModerationStats:
        """See ``Repository.moderation_stats``."""
        return ModerationStats(**self._count_each(docs.moderation_queries(since)))

    def release_inactivity_notice(self, user_id: int) -> None:
        """See ``Repository.release_inactivity_notice``."""
        self._set_fields(user_id, {"notice_pending": True})

    def count_idle_excluded(self, idle_before: float) -> dict[str, int]:
        """See ``Repository.count_idle_excluded``."""
        return self._count_each(docs.idle_excluded_queries(idle_before))

    def ban_erased(self, report_id: int) -> list[int] | None:
        """See ``Repository.ban_erased``."""
        key = self._ban_on_return(report_id)
        if key is None:
            return None
        return [user_id for user_id in returned(self._pepper, key, self._waiting())
                if self.set_banned(user_id, banned=True)]

    def rate_user(self, rated_id: int, chat_id: int, positive: bool, now: float,
                  rule: RatingRule) -> RatingVerdict:
        """See ``Repository.rate_user``: written only if the ratings are still as read."""
        verdicts = [RatingVerdict(counted=False)]

        def change(doc: dict[str, Any]) -> dict[str, Any] | None:
            state, verdicts[0] = rate(docs.rating_state(doc.get("ratings")), chat_id, positive,
                                      now, rule)
            return {"ratings": docs.rating_document(state)} if verdicts[0].counted else None

        self._change("users", rated_id, ("ratings",), change)
        return verdicts[0]

    def resolve_report(self, report_id: int, status: str,
                       was: tuple[str, ...] = ("open",)) -> Report | None:
        """See ``Repository.resolve_report``: a guarded change, won once."""
        doc = self._change("reports", report_id, ("status",), lambda doc: {"status": status}
                           if doc.get("status") in was else None)
        return None if doc is None else docs.report(report_id, doc)

    def _ban_on_return(self, report_id: int) -> str | None:
        """Mark a report about an erased user as banning them; its keyed hash, else None."""
        doc = self._change("reports", report_id, ("reported_key",), lambda doc: {
            "ban_on_return": True} if doc.get("reported_key") else None)  # a report may hold none
        return None if doc is None else str(doc["reported_key"])

    def _bans_on_return(self, key: str) -> bool:
        """Whether a report marked so bans the user of this keyed hash."""
        return any(doc.get("ban_on_return") for _, doc in self._any_of(
            "reports", (("reported_key", "==", key),)))

    def apply_erased_ban(self, user_id: int) -> bool:
        """See ``Repository.apply_erased_ban``."""
        return self._bans_on_return(protection_key(self._pepper, user_id)) and self.set_banned(
            user_id, banned=True)

    def inactive_accounts(self, cut: Cutoffs, limit: int) -> list[int]:
        """See ``Repository.inactive_accounts``: the rule decides on the longest noticed."""
        return [int(key) for key, doc in self._first("users", docs.noticed(cut), "noticed_at",
                                                     limit)
                if erasure_due(docs.account(int(key), doc), cut)]

    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        doc = self._document("users", user_id)
        return docs.user_state(user_id, doc) if doc else None

    def _language(self, user_id: int) -> str:
        """The user's language ("en" for a user who is gone)."""
        doc = self._document("users", user_id)
        return str(doc["language"]) if doc else "en"

    def _ended_by(self, user_id: int, update_id: int) -> EndedChat | None:
        """The user's chat that ``update_id`` ended before (a re-delivery), if any."""
        for chat_id, doc in self._any_of("chats", (("closed_by_update", "==", update_id),)):
            if user_id in doc["users"]:
                partner_id = docs.partner_of(doc, user_id)
                return EndedChat(int(chat_id), partner_id, self._language(partner_id), True)
        return None

    def chat_of(self, user_id: int, chat_id: int) -> ChatRecord | None:
        """See ``Repository.chat_of``."""
        doc = self._document("chats", chat_id)
        return docs.chat_record(chat_id, doc, user_id) if doc and user_id in doc["users"] else None

    def _avoided_by(self, user_id: int, recent: int) -> frozenset[int]:
        """Whom the user must not meet: recent partners, exclusions either way, by key too."""
        key = protection_key(self._pepper, user_id)
        chats = self._latest_chats(user_id, recent) if recent > 0 else ()
        return matching.avoided(user_id, matching.recent_partners(
            user_id, ([int(u) for u in doc["users"]] for _, doc in chats), recent), (
            docs.exclusion(doc) for _, doc in self._any_of("exclusions", (
                ("user_id", "==", user_id), ("other_id", "==", user_id),
                ("other_key", "==", key)))), key)

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        doc = self._document("users", user_id)
        if doc is None:
            return None
        chats, links, exclusions, reports, album_docs = (
            self._any_of(collection, [(name, operator, user_id) for name in names])
            for collection, names, operator in (("chats", ("users",), "array_contains"),
                                                *((c, n, "==") for c, n in docs.EXPORTED)))
        return docs.user_records(
            user_id, doc, self._document("lobby", user_id),
            ((int(key), chat) for key, chat in chats),
            (doc for _, doc in links if doc.get("role") != "copy"),  # Firestore's second end
            (doc for _, doc in exclusions), ((int(key), doc) for key, doc in reports),
            ((str(key), doc) for key, doc in album_docs))

    def unfinished_erasures(self, limit: int) -> list[int]:
        """See ``Repository.unfinished_erasures``: none where erasure is one transaction."""
        del limit
        return []

    def finish_erasure(self, user_id: int) -> dict[str, int]:
        """See ``Repository.finish_erasure``: nothing, where none is ever unfinished."""
        del user_id
        return {}

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        for chat_id, doc in self._latest_chats(user_id, 1):
            return docs.chat_record(chat_id, doc, user_id)
        return None


class DocumentPrimitives(Primitives, Protocol):
    """What MongoDB and Firestore give ``DocumentOperations`` besides ``Primitives``."""

    def _count(self, collection: str, filters: tuple[docs.Filter, ...]) -> int:
        """How many documents of ``collection`` the ``filters`` select."""
        ...

    def _create(self, collection: str, key: Any, doc: Mapping[str, Any]) -> bool:
        """Store ``doc`` as the document ``key`` unless there is one; whether it did."""
        ...

    def _move(self, collection: str, key: Any, new_key: Any, doc: Mapping[str, Any]) -> None:
        """Store ``doc`` under ``new_key`` in place of the document ``key``."""
        ...

    def _array_change(self, collection: str, key: Any, field: str, value: int, *,
                      add: bool) -> None:
        """Add ``value`` to the array ``field`` of a document, or remove it, if it exists."""
        ...

    def _delete_where(self, collection: str, condition: docs.Filter) -> int:
        """Delete every document that ``condition`` selects; how many (Firestore: messages)."""
        ...

    def open_update(self, update_id: int, profile: Profile | None, default_language: str,
                    now: float) -> OpenedUpdate:
        """See ``Repository.open_update`` (an update with no user, here)."""
        ...

    def _erase_profile(self, user_id: int, finishing: bool = False) -> dict[str, int] | None:
        """Delete the user's lobby entry and document (a ban keeps the remnant), by kind.

        ``finishing`` an erasure cut short after this step: a user who came back since
        keeps both (None).
        """
        ...


class DocumentOperations(SharedOperations, DocumentPrimitives):
    """The port operations MongoDB and Firestore perform the same way over their documents."""

    def _claimed_alone(self, update_id: int, user_id: int, doc: Mapping[str, Any],
                       now: float) -> OpenedUpdate:
        """A banned user's update, claimed as one with no user (``domain.erasure``).

        Nothing of theirs is written: the remnant stays the remnant.
        """
        opened = self.open_update(update_id, None, "", now)
        return replace(opened, user=None if opened.duplicate else docs.user_state(user_id, doc))

    def _count_each(self, queries: Mapping[str, docs.Query]) -> dict[str, int]:
        """Each query's count, by its name."""
        return docs.count_each(queries, self._count)

    def _resumed_search(self, doc: Mapping[str, Any], update_id: int) -> MatchResult | None:
        """The answer to a search by the user of ``doc`` if they are in a chat or refused."""
        chat = docs.active_chat(doc)
        resumed = None if chat is None else matching.resume_search(chat, (self._document(
            "chats", chat.chat_id) or {}).get("opened_by_update"), update_id)
        return resumed or age_gate.refused_search(age_gate.refuses(doc.get("age_answer")))

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``.

        The lobby entry and the user document go first; every chat, report and partner
        that names the user is then rewritten under the adapter's guard, so a chat made or
        ended meanwhile is never overwritten. Telegram delivers a user's updates
        concurrently, so the user may come back while this runs (a new document) and be
        paired again: the chat their new document names, and its partner, are theirs
        again, and are left alone.
        """
        return self._erase(user_id, finishing=False)

    def finish_erasure(self, user_id: int) -> dict[str, int]:
        """See ``Repository.finish_erasure``."""
        return self._erase(user_id, finishing=True)

    def _erase(self, user_id: int, *, finishing: bool) -> dict[str, int]:
        # A journal entry until the last step: an erasure stopped half way (the user
        # document already gone) is finished by the job (unfinished_erasures). It says
        # whether the profile was taken, so that finishing tells a user back since.
        journal = self._document("erasures", user_id) if finishing else None
        self._create("erasures", user_id, {"user_id": user_id, "profile_erased": False})
        profile = self._erase_profile(user_id, bool((journal or {}).get("profile_erased")))
        self._change("erasures", user_id, ("profile_erased",),
                     lambda entry: {"profile_erased": True})
        counts: Counter[str] = Counter(profile or {})
        for kind, collection, names in docs.ERASED:
            if profile is None and collection == "exclusions":
                continue  # back since: the blocks and 👎 they made keep protecting them
            for name in names:
                counts[kind] += self._delete_where(collection, (name, "==", user_id))
        stones, key = Tombstones(), protection_key(self._pepper, user_id)
        counts["chats_anonymised"] = 0
        for chat_id, _ in self._any_of("chats", (("users", "array_contains", user_id),)):
            if chat_id != self._chat_since_return(user_id):
                counts["chats_anonymised"] += self._change(
                    "chats", chat_id, ("users", "ended_by"), lambda doc: docs.anonymised_chat(
                        doc, user_id, stones.of(docs.partner_of(doc, user_id)), key)) is not None
        for partner_id, _ in self._any_of("users", (("chat.partner", "==", user_id),)):
            self._change("users", partner_id, ("chat",), functools.partial(
                _partner_left, user_id, self._chat_since_return(user_id)))
        for collection, name, partner, key_field in docs.KEPT:  # others' protections stay
            for record_id, doc in self._any_of(collection, ((name, "==", user_id),)):
                self._keep(collection, record_id, doc, name, user_id,
                           docs.kept(doc, name, partner, key_field, stones, key))
        for entry_id, _ in self._any_of("lobby", (("avoid", "array_contains", user_id),)):
            self._array_change("lobby", entry_id, "avoid", user_id, add=False)
        self._delete_where("erasures", ("user_id", "==", user_id))
        return counts

    def unfinished_erasures(self, limit: int) -> list[int]:
        """See ``Repository.unfinished_erasures``: the journal entries ``delete_user`` left."""
        return [int(entry["user_id"]) for _, entry in self._first("erasures", (), "user_id",
                                                                  limit)]

    def _chat_since_return(self, user_id: int) -> int | None:
        """The chat of a user erased a moment ago who came back and was paired meanwhile."""
        fresh = self._document("users", user_id)
        chat = docs.active_chat(fresh) if fresh is not None else None
        return chat.chat_id if chat is not None else None

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """See ``Repository.exclude_pair``; waiting entries learn of it at once."""
        doc = docs.exclusion_document(user_id, other_id, reason, now, other_key)
        self._create("exclusions", docs.exclusion_id(doc), doc)
        for waiting, other in ((user_id, other_id), (other_id, user_id)):
            self._array_change("lobby", waiting, "avoid", other, add=True)

    def _keep(self, collection: str, record_id: Any, doc: Mapping[str, Any], name: str,
              user_id: int, kept: dict[str, Any]) -> None:
        """Write ``kept`` into a record whose ``name`` is the erased user (``docs.KEPT``)."""
        if collection == "exclusions":  # its id names both users: it moves
            moved = {k: v for k, v in doc.items() if k != "_id"} | kept
            self._move(collection, record_id, docs.exclusion_id(moved), moved)
        else:
            self._change(collection, record_id, (name,),
                         lambda found: kept if found.get(name) == user_id else None)


def _partner_left(erased_id: int, returned_to: int | None,
                  doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """A partner's chat with the erased user ends (unless it is the one they came back to)."""
    chat = doc.get("chat") or {}
    return {"chat": None} if chat.get("partner") == erased_id and \
        chat.get("id") != returned_to else None
