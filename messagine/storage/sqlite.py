"""The SQLite repository: the embedded default for running the bot on one's own machine.

Every operation is one transaction on the database file (``sqlite_database``); those
that write take the write lock up front (BEGIN IMMEDIATE), so a read-decide-write
sequence such as matching or ending a chat is serialised across processes. The rules
themselves are ``messagine.domain``'s, applied to the rows read in the transaction.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar

from messagine.domain import age_gate, albums, matching
from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S, Claim, ClaimState, Decision, decide
from messagine.domain.erasure import (
    UNCONFIGURED_PEPPER,
    Tombstones,
    anonymise_chat,
    protection_key,
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.retention import Cutoffs, chat_idle, notice_due
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
    UserRecords,
    UserState,
)
from messagine.storage import documents as docs
from messagine.storage.shared import SharedOperations
from messagine.storage.sqlite_database import Database

# The state of one user, named as a user document's fields: their profile and flags,
# their chat (seen from their side) and since when they wait in the lobby.
_STATE_QUERY = """
SELECT u.*, l.since AS waiting_since, CASE WHEN m.chat_id IS NOT NULL THEN json_object(
    'id', m.chat_id, 'partner', m.partner_id,
    'partner_language', coalesce(p.language, u.language), 'started_at', c.started_at) END AS chat
FROM users u
LEFT JOIN memberships m ON m.user_id = u.id
LEFT JOIN chats c ON c.id = m.chat_id
LEFT JOIN users p ON p.id = m.partner_id
LEFT JOIN lobby l ON l.user_id = u.id
WHERE u.id = ?
"""

# A user's latest chats (a chat made later has the larger id).
_NEWEST_FIRST = "ORDER BY started_at DESC, id DESC LIMIT :limit"

# One page of a pool's lobby in waiting order, for the matching rule to choose from.
_LOBBY_PAGE = """
SELECT l.user_id, l.language, l.since, coalesce(u.banned, 0), u.age_answer
FROM lobby l LEFT JOIN users u ON u.id = l.user_id
WHERE l.language = ? ORDER BY l.since, l.user_id LIMIT ? OFFSET ?
"""
_PAGE = 50
T = TypeVar("T")


def _rows(conn: sqlite3.Connection, sql: str, params: Any = ()) -> list[dict[str, Any]]:
    """A query's rows as mappings of column name to value."""
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor]


_KEYS = {"lobby": "user_id", "albums": "key"}
"""The key column of the tables not keyed by ``id`` (an exclusion or a message has none)."""


def _as_document(table: str, row: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A row as (key, document), the document with the fields the document stores keep.

    A chat's two users are its ``users``; an album's document is JSON here.
    """
    if table == "chats":
        return row["id"], {**row, "users": [row["user_a"], row["user_b"]]}
    if table == "albums":
        return row["key"], json.loads(row["doc"])
    if table == "users":  # JSON here: the flood counters, and the chat _STATE_QUERY joins in
        return row["id"], {**row, "flood": json.loads(row["flood"] or "{}"),
                           "chat": json.loads(row.get("chat") or "null")}
    return row.get(_KEYS.get(table, "id")), dict(row)


def _chats(conn: sqlite3.Connection, user_id: int, rest: str = "",
           **params: object) -> list[tuple[int, dict[str, Any]]]:
    """The user's chats as (id, chat document); ``rest`` narrows, orders or limits them."""
    return [_as_document("chats", c) for c in _rows(
        conn, "SELECT * FROM chats WHERE (user_a = :me OR user_b = :me) " + rest,
        {"me": user_id, **params})]


def _where(table: str, filters: Iterable[docs.Filter], joined: str = " AND "
           ) -> tuple[str, list[Any]]:
    """The document stores' ``filters`` as an SQL condition and its parameters.

    A chat's users are two columns here, so "users array_contains" asks for either; an
    album's fields are in its JSON ``doc``. ``joined``: " OR " for any of the filters.
    """
    clauses, params = [], []
    for name, operator, value in filters:
        column = f"json_extract(doc, '$.{name}')" if table == "albums" else name
        if operator == "array_contains":
            clauses.append("(user_a = ? OR user_b = ?)")
            params += [value, value]
        elif value is None:
            clauses.append(f"{column} IS {'NOT ' if operator == '!=' else ''}NULL")
        else:
            clauses.append(f"{column} {'=' if operator == '==' else operator} ?")
            params.append(value)
    return joined.join(clauses) or "1", params


def _select(conn: sqlite3.Connection, table: str, filters: Iterable[docs.Filter], rest: str,
            *more: object, joined: str = " AND ") -> list[dict[str, Any]]:
    """The rows of ``table`` that the ``filters`` select; ``rest`` orders and limits them."""
    condition, params = _where(table, filters, joined)
    return _rows(conn, f"SELECT * FROM {table} WHERE {condition} {rest}", (*params, *more))


def _count(conn: sqlite3.Connection, table: str, filters: Iterable[docs.Filter]) -> int:
    """How many rows of ``table`` the ``filters`` select."""
    condition, params = _where(table, filters)
    return int(conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}",
                            params).fetchone()[0])


def _delete_some(conn: sqlite3.Connection, table: str, filters: Iterable[docs.Filter],
                 limit: int) -> int:
    """Delete at most ``limit`` rows of ``table`` that the ``filters`` select."""
    condition, params = _where(table, filters)
    return conn.execute(f"DELETE FROM {table} WHERE rowid IN"  # the names are ours, values bound
                        f" (SELECT rowid FROM {table} WHERE {condition} LIMIT ?)",
                        (*params, limit)).rowcount


def _insert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any], how: str = "",
            then: str = "") -> sqlite3.Cursor:
    """Insert ``row`` (column name to value); ``how``: "OR IGNORE" and the like."""
    return conn.execute(f"INSERT {how} INTO {table} ({', '.join(row)})"
                        f" VALUES ({', '.join(f':{name}' for name in row)}) {then}", row)


def _upsert(conn: sqlite3.Connection, table: str, row: Mapping[str, Any], key: str,
            updated: Iterable[str]) -> None:
    """Insert ``row``, or where ``key`` is taken already, set the ``updated`` columns from it."""
    _insert(conn, table, row, then=f"ON CONFLICT ({key}) DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in updated))


def _assignments(columns: Iterable[str]) -> str:
    """An UPDATE's SET list binding each column to its named parameter (the names are ours)."""
    return ", ".join(f"{name} = :{name}" for name in columns)


class SqliteRepository(SharedOperations):
    """The repository port on one SQLite database file."""

    backend = "sqlite"

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0,
                 flood_rule: FloodRule | None = None, pepper: bytes = UNCONFIGURED_PEPPER) -> None:
        self._flood_rule = flood_rule or FloodRule()
        self._pepper = pepper
        self._database = Database(path, busy_timeout_s)
        self._transaction = self._database.transaction

    def init_schema(self) -> None:
        """Create the tables and indexes if absent (also done on first use)."""
        self._database.connection()

    def close(self) -> None:
        """Close this thread's connection."""
        self._database.close()

    # -- updates and users ---------------------------------------------------------------

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None, owner: str = "", lease_s: float = LEASE_S,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: claim, profile upsert and state in one transaction."""
        with self._transaction() as conn:
            if profile is None:
                claimed = _insert(conn, "claimed_updates", {"update_id": update_id,
                                  "claimed_at": now, "owner": owner}, "OR IGNORE").rowcount
                return OpenedUpdate(duplicate=not claimed)
            known = self._document("users", profile.user_id)
            if known is not None and known["banned"]:  # claimed alone (domain.erasure)
                claimed = _insert(conn, "claimed_updates", {"update_id": update_id,
                                  "claimed_at": now, "owner": owner}, "OR IGNORE").rowcount
                return OpenedUpdate(duplicate=not claimed,
                                    user=docs.user_state(profile.user_id, known))
            row = conn.execute(
                "SELECT state, owner, lease_until, attempts FROM claimed_updates "
                "WHERE update_id = ?", (update_id,)).fetchone()
            existing = None if row is None else Claim(
                update_id, ClaimState(row[0]), row[1] or "", row[2] or 0.0, row[3])
            decision, claim = decide(existing, update_id, owner, now, lease_s)
            if claim is None:
                return OpenedUpdate(duplicate=decision is Decision.DONE,
                                    busy=decision is Decision.BUSY)
            entry = {**docs.claim_entry(claim), "state": claim.state.value}
            _upsert(conn, "claimed_updates", {"update_id": update_id, "claimed_at": now, **entry},
                    "update_id", entry)
            counters, verdict = admit(docs.flood_state(known or {}), now, album, self._flood_rule)
            refreshed = {**docs.profile_fields(profile, now), "flood": json.dumps(asdict(counters))}
            doc = {**(known or docs.new_user_fields(default_language, now)), **refreshed}
            written = refreshed if age_gate.stores_profile(doc.get("age_answer")) else (
                refreshed | docs.forgotten_profile())  # the marker stays the marker
            _upsert(conn, "users", {"id": profile.user_id, **docs.user_row(
                docs.new_user_fields(default_language, now)), **written}, "id", written)
            return OpenedUpdate(duplicate=False,
                                user=docs.user_state(profile.user_id, doc, is_new=known is None),
                                throttled=verdict.throttled, warn=verdict.warn,
                                resumed=decision is Decision.TAKE_OVER)

    def finish_update(self, update_id: int, user_id: int | None, owner: str) -> None:
        """See ``Repository.finish_update``."""
        del user_id  # the claim is a row of its own here
        with self._transaction() as conn:
            conn.execute(
                "UPDATE claimed_updates SET state = ? WHERE update_id = ? AND owner = ? "
                "AND state = ?",
                (ClaimState.DONE.value, update_id, owner, ClaimState.IN_PROGRESS.value))

    def release_update(self, update_id: int, owner: str | None = None) -> None:
        """See ``Repository.release_update``."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM claimed_updates WHERE update_id = ? "
                         "AND (? IS NULL OR owner = ?)", (update_id, owner, owner))

    def set_language(self, user_id: int, language: str) -> UserState:
        """See ``Repository.set_language``."""
        with self._transaction() as conn:
            state = self.get_user(user_id)
            if state is None:
                raise LookupError(f"unknown user {user_id}")
            if state.chat is not None:
                return state
            conn.execute("UPDATE users SET language = ? WHERE id = ?", (language, user_id))
            conn.execute("UPDATE lobby SET language = ? WHERE user_id = ?", (language, user_id))
            return replace(state, language=language)

    def _set_fields(self, user_id: int, fields: Mapping[str, Any], *,
                    leave_lobby: bool = False) -> tuple[bool, bool]:
        """Set columns of the user's row, or leave the lobby too; whether row and entry were."""
        with self._transaction() as conn:
            left = leave_lobby and conn.execute("DELETE FROM lobby WHERE user_id = ?",
                                                (user_id,)).rowcount > 0
            return conn.execute(f"UPDATE users SET {_assignments(fields)} WHERE id = :user",
                                {**fields, "user": user_id}).rowcount > 0, left

    def _change(self, collection: str, key: Any, reads: tuple[str, ...],
                change: Callable[[dict[str, Any]], Mapping[str, Any] | None]
                ) -> dict[str, Any] | None:
        """Read, decide and write in one write transaction, whose lock guards ``reads`` too."""
        del reads
        with self._transaction() as conn:
            doc = self._document(collection, key)
            if doc is None or (fields := change(doc)) is None:
                return None
            row = {name: json.dumps(value) if isinstance(value, dict) else value  # a map: JSON
                   for name, value in fields.items()}
            conn.execute(f"UPDATE {collection} SET {_assignments(row)}"  # the names are ours
                         f" WHERE {_KEYS.get(collection, 'id')} = :_key", {**row, "_key": key})
        return {**doc, **fields}

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        with self._transaction() as conn:
            stored = conn.execute("SELECT age_answer FROM users WHERE id = ?",
                                  (user_id,)).fetchone()
            if stored is not None and age_gate.replaces(stored[0], confirmed):
                conn.execute("UPDATE users SET age_answer = ?, age_answered_at = ? WHERE id = ?",
                             (age_gate.answer(confirmed), now, user_id))
            if not confirmed:  # an erased user's refusal leaves the marker
                _insert(conn, "users", docs.user_row(docs.refusal_marker_document(user_id, now))
                        | {"id": user_id}, "OR IGNORE")

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``."""
        stones, key = Tombstones(), protection_key(self._pepper, user_id)
        with self._transaction() as conn:
            counts: Counter[str] = Counter()
            for kind, table, names in (*docs.ERASED, ("lobby", "lobby", ("user_id",))):
                condition, params = _where(table, [(name, "==", user_id) for name in names],
                                           " OR ")
                counts[kind] += conn.execute(f"DELETE FROM {table} WHERE {condition}",
                                             params).rowcount
            conn.execute("DELETE FROM memberships WHERE user_id = :me OR partner_id = :me",
                         {"me": user_id})
            chats = _chats(conn, user_id)
            for chat_id, chat in chats:
                changed = anonymise_chat(chat["users"], chat["ended_by"], user_id,
                                         stones.of(docs.partner_of(chat, user_id)))
                assert changed is not None  # noqa: S101 - the query selected their chats
                conn.execute("UPDATE chats SET user_a = ?, user_b = ?, ended_by = ?, erased_key = ?"
                             " WHERE id = ?", (*changed.users, changed.ended_by, key, chat_id))
            counts["chats_anonymised"] = len(chats)
            for table, name, partner, key_field in docs.KEPT:  # others' protections stay
                for row in _rows(conn, f"SELECT rowid AS row_id, * FROM {table} WHERE {name} = ?",
                                (user_id,)):
                    kept = docs.kept(row, name, partner, key_field, stones, key)
                    conn.execute(f"UPDATE {table} SET {_assignments(kept)} WHERE rowid = :row_id",
                                 {**kept, "row_id": row["row_id"]})
            # A ban outlives erasure (domain.erasure): only the banned remnant stays; an
            # age refusal only its marker. Its columns are named as the documents' fields;
            # the rest live in other tables.
            found = _rows(conn, "SELECT banned, age_answer, age_answered_at FROM users"
                          " WHERE id = ?", (user_id,))
            survivor = docs.kept_profile(user_id, found[0] if found else None)
            conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
            if survivor is not None:
                _insert(conn, "users", docs.user_row(survivor) | {"id": user_id})
            counts["kept_for_ban"] = int(bool(found and found[0]["banned"]))
            counts["profile"] = int(bool(found and not found[0]["banned"]))
        return counts

    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``: SQLite has no TTL, so this deletes.

        One short write transaction, at most ``limit`` rows of each table.
        """
        with self._transaction() as conn:
            counts = {kind: _delete_some(conn, table, filters, limit)
                      for kind, table, filters in docs.expired(now, retention)}
            counts["claims"] += _delete_some(  # an album on its way is a claim too
                conn, "albums", (("expires_at", "<", now),), limit)
            return counts

    def idle_chats(self, cut: Cutoffs, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.idle_chats``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT m.user_id, u.language, u.last_seen, p.last_seen FROM memberships m"
                " JOIN users u ON u.id = m.user_id JOIN users p ON p.id = m.partner_id"
                " WHERE m.user_id < m.partner_id AND u.last_seen < :cut AND p.last_seen < :cut"
                " LIMIT :limit", {"cut": cut.active_before, "limit": limit}).fetchall()
        return [(int(r[0]), r[1]) for r in rows if chat_idle(r[2:], cut.active_before)]

    def claim_inactivity_notices(self, cut: Cutoffs, now: float,
                                 limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_inactivity_notices``: select and mark in one transaction."""
        with self._transaction() as conn:
            rows = [row for row in _select(conn, "users", docs.notice_candidates(cut),
                                           "ORDER BY last_seen LIMIT ?", limit)
                    if notice_due(docs.account(row["id"], row), cut)]
            conn.executemany("UPDATE users SET notice_pending = 0, noticed_at = ? WHERE id = ?",
                             [(now, row["id"]) for row in rows])
        return [(int(row["id"]), row["language"]) for row in rows]

    def _first(self, collection: str, filters: Iterable[docs.Filter], order: str,
               limit: int) -> list[tuple[Any, dict[str, Any]]]:
        with self._transaction(write=False) as conn:  # the names are ours, the values bound
            return [_as_document(collection, row) for row in _select(
                conn, collection, filters, f"ORDER BY {order} LIMIT ?", limit)]

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT sender_message_id FROM message_links WHERE chat_id = ? AND sender_id = ?"
                " ORDER BY sender_message_id DESC LIMIT ?", (chat_id, sender_id, limit)).fetchall()
        return sorted(int(row[0]) for row in rows)

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float, reported_key: str | None = None) -> Report | None:
        """See ``Repository.add_report``."""
        report = docs.new_report(reporter_id, reported_id, chat_id, reason, now)
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM reports WHERE reporter_id = ? AND chat_id = ?",
                            (reporter_id, chat_id)).fetchone():
                return None
            report_id = _insert(conn, "reports",
                                docs.report_document(report, reported_key)).lastrowid
        assert report_id is not None  # noqa: S101 - an INSERT always sets lastrowid
        return replace(report, report_id=report_id)

    def _count_each(self, queries: Mapping[str, docs.Query]) -> dict[str, int]:
        """Each query's count, in one read transaction."""
        with self._transaction(write=False) as conn:
            return docs.count_each(queries, lambda table, filters: _count(conn, table, filters))

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: select and mark in one IMMEDIATE transaction."""
        with self._transaction() as conn:
            rows = _rows(conn, """
                SELECT u.id, u.language, m.chat_id AS chat, l.since AS waiting_since
                FROM users u
                LEFT JOIN memberships m ON m.user_id = u.id
                LEFT JOIN lobby l ON l.user_id = u.id
                WHERE u.nudge_pending = 1 AND u.last_seen < ? AND u.blocked = 0
                  AND u.banned = 0 AND u.reminders_off = 0
                ORDER BY u.last_seen LIMIT ?""", (idle_before, limit))
            conn.executemany("UPDATE users SET nudge_pending = 0, reminded_at = ? WHERE id = ?",
                             [(now, row["id"]) for row in rows])
        return [docs.nudge(row["id"], row) for row in rows]

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT user_id, language FROM lobby WHERE since < ?"
                                " ORDER BY since LIMIT ?", (waiting_before, limit)).fetchall()
            conn.executemany("DELETE FROM lobby WHERE user_id = ?", [(r[0],) for r in rows])
        return [(int(user_id), language) for user_id, language in rows]

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT sender_id, count(*) FROM message_links WHERE chat_id = ?"
                " GROUP BY sender_id", (chat_id,)).fetchall()
        return {int(sender): int(count) for sender, count in rows}

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """See ``Repository.exclude_pair``."""
        with self._transaction() as conn:
            _insert(conn, "exclusions", docs.exclusion_document(user_id, other_id, reason, now,
                                                                other_key), "OR IGNORE")

    def _waiting(self) -> list[int]:
        with self._transaction(write=False) as conn:
            return [int(u) for (u,) in conn.execute("SELECT user_id FROM lobby")]

    def _document(self, collection: str, key: Any) -> dict[str, Any] | None:
        """A row as its document; a user's holds their chat and lobby time (_STATE_QUERY)."""
        with self._transaction(write=False) as conn:
            found = _rows(conn, _STATE_QUERY, (key,)) if collection == "users" else _select(
                conn, collection, ((_KEYS.get(collection, "id"), "==", key),), "")
        return _as_document(collection, found[0])[1] if found else None

    def _any_of(self, collection: str,
                filters: Iterable[docs.Filter]) -> list[tuple[Any, dict[str, Any]]]:
        with self._transaction(write=False) as conn:
            return [_as_document(collection, row)
                    for row in _select(conn, collection, filters, "", joined=" OR ")]

    def _latest_chats(self, user_id: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        with self._transaction(write=False) as conn:
            return _chats(conn, user_id, _NEWEST_FIRST, limit=limit)

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``: its reads in one transaction."""
        with self._transaction(write=False):
            return super().export_user(user_id)

    # -- lobby and chats -----------------------------------------------------------------

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``; serialised by the IMMEDIATE write lock."""
        with self._transaction() as conn:
            state = self.get_user(user_id)
            if state is None:
                raise LookupError(f"unknown user {user_id}")
            if (refused := age_gate.refused_search(state.age_refused)) is not None:
                return refused
            if state.chat is not None:
                opened_by = conn.execute(
                    "SELECT opened_by_update FROM chats WHERE id = ?", (state.chat.chat_id,)
                ).fetchone()[0]
                resumed = matching.resume_search(state.chat, opened_by, update_id)
                assert resumed is not None  # noqa: S101 - the user is in a chat
                return resumed
            entry = conn.execute("SELECT language FROM lobby WHERE user_id = ?",
                                 (user_id,)).fetchone()
            pool = entry[0] if entry else state.language  # "*": the any-language pool
            candidate = self._choose(conn, matching.Seeker(
                user_id, pool, self._avoided_by(user_id, recent_partners)), recent_partners)
            if candidate is None:
                _insert(conn, "lobby", {"user_id": user_id, "language": pool, "since": now},
                        "OR IGNORE")
                return matching.queued(state.waiting, conn.execute(
                    "SELECT count(*) FROM lobby WHERE language = ?", (pool,)).fetchone()[0])
            partner_id, partner_since = candidate.user_id, candidate.since
            conn.execute("DELETE FROM lobby WHERE user_id IN (?, ?)", (user_id, partner_id))
            chat_id = _insert(conn, "chats", {"user_a": partner_id, "user_b": user_id,
                                              "language": pool, "started_at": now,
                                              "opened_by_update": update_id}).lastrowid
            conn.executemany(
                "INSERT INTO memberships (user_id, chat_id, partner_id) VALUES (?, ?, ?)",
                [(user_id, chat_id, partner_id), (partner_id, chat_id, user_id)],
            )
            assert chat_id is not None  # noqa: S101 - an INSERT always sets lastrowid
            return MatchResult(
                MatchOutcome.MATCHED, ActiveChat(chat_id, partner_id, self._language(partner_id),
                                                 now), partner_waiting_since=partner_since)

    def _choose(self, conn: sqlite3.Connection, seeker: matching.Seeker,
                recent: int) -> matching.Candidate | None:
        """The matching rule's choice from the seeker's pool, read a page at a time."""
        for offset in itertools.count(0, _PAGE):
            rows = conn.execute(_LOBBY_PAGE, (seeker.pool, _PAGE, offset)).fetchall()
            chosen = matching.pick(seeker, (matching.Candidate(
                other, pool, since, self._avoided_by(other, recent),
                banned=bool(banned), age_refused=age_gate.refuses(answer))
                for other, pool, since, banned, answer in rows))
            if chosen is not None or len(rows) < _PAGE:
                return chosen
        return None  # pragma: no cover - itertools.count never ends

    def join_any_language(self, user_id: int) -> bool:
        """See ``Repository.join_any_language``."""
        with self._transaction() as conn:
            return conn.execute("UPDATE lobby SET language = '*' WHERE user_id = ?",
                                (user_id,)).rowcount > 0

    def claim_language_offers(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.claim_language_offers``."""
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT user_id, language FROM lobby WHERE since < ? AND language != '*'"
                " AND offered = 0 ORDER BY since LIMIT ?", (waiting_before, limit)).fetchall()
            conn.executemany("UPDATE lobby SET offered = 1 WHERE user_id = ?",
                             [(row[0],) for row in rows])
        return [(int(user_id), language) for user_id, language in rows]

    def leave_lobby(self, user_id: int) -> bool:
        """See ``Repository.leave_lobby``."""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM lobby WHERE user_id = ?", (user_id,)).rowcount > 0

    def end_chat(
        self, user_id: int, reason: EndReason, now: float, update_id: int
    ) -> EndedChat | None:
        """See ``Repository.end_chat``."""
        with self._transaction() as conn:
            member = conn.execute(
                "SELECT m.chat_id, m.partner_id, c.opened_by_update FROM memberships m"
                " JOIN chats c ON c.id = m.chat_id WHERE m.user_id = ?", (user_id,)).fetchone()
            if member is None or not matching.may_end(reason, member[2], update_id):
                return self._ended_by(user_id, update_id)
            chat_id, partner_id, _ = member
            conn.execute(
                "UPDATE chats SET ended_at = ?, ended_by = ?, end_reason = ?,"
                " closed_by_update = ? WHERE id = ?",
                (now, user_id, reason.value, update_id, chat_id),
            )
            conn.execute("DELETE FROM memberships WHERE chat_id = ?", (chat_id,))
            return EndedChat(chat_id, partner_id, self._language(partner_id), resumed=False)

    # -- message links -------------------------------------------------------------------

    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``."""
        with self._transaction() as conn:
            _insert(conn, "message_links", asdict(link), "OR REPLACE")

    def change_album(self, key: str, rule: Callable[[Album | None], tuple[Album | None, T]]
                     ) -> T:
        """See ``Repository.change_album``: read, apply and write in one transaction."""
        with self._transaction() as conn:
            row = conn.execute("SELECT doc FROM albums WHERE key = ?", (key,)).fetchone()
            album, answer = rule(docs.album(key, json.loads(row[0])) if row else None)
            if album is not None:
                conn.execute("INSERT OR REPLACE INTO albums (key, doc, expires_at) VALUES"
                             " (?, ?, ?)", (key, json.dumps(docs.album_document(album)),
                                            albums.expires_at(album)))
            return answer

    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``."""
        with self._transaction(write=False) as conn:
            found = _rows(
                conn, "SELECT * FROM message_links"
                " WHERE chat_id = :chat AND ((sender_id = :user AND sender_message_id = :msg)"
                "  OR (recipient_id = :user AND copy_message_id = :msg))",
                {"chat": chat_id, "user": user_id, "msg": message_id})
        return docs.message_link(found[0]) if found else None

    # -- statistics ----------------------------------------------------------------------
