"""The SQLite repository: the embedded default for running the bot on one's own machine.

Safe across processes sharing one database file: WAL mode, a busy timeout, and every
write as one ``BEGIN IMMEDIATE`` transaction, which takes the database's single write lock
up front so that read-decide-write sequences (matching, ending a chat) are serialised.
Each thread gets its own connection, since function instances serve requests on threads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

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

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT,
    username TEXT,
    language_code TEXT,
    language TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    blocked INTEGER NOT NULL DEFAULT 0,
    banned INTEGER NOT NULL DEFAULT 0,
    analytics_opt_out INTEGER NOT NULL DEFAULT 0,
    age_answer TEXT,
    age_answered_at REAL,
    flood TEXT,
    reminders_off INTEGER NOT NULL DEFAULT 0,
    nudge_pending INTEGER NOT NULL DEFAULT 1,
    reminded_at REAL
);
CREATE TABLE IF NOT EXISTS claimed_updates (
    update_id INTEGER PRIMARY KEY,
    claimed_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS lobby (
    user_id INTEGER PRIMARY KEY,
    language TEXT NOT NULL,
    since REAL NOT NULL,
    offered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS lobby_by_language ON lobby (language, since, user_id);
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_a INTEGER NOT NULL,
    user_b INTEGER NOT NULL,
    language TEXT NOT NULL,
    started_at REAL NOT NULL,
    opened_by_update INTEGER,
    ended_at REAL,
    ended_by INTEGER,
    end_reason TEXT,
    closed_by_update INTEGER
);
CREATE INDEX IF NOT EXISTS chats_by_user_a ON chats (user_a, started_at);
CREATE INDEX IF NOT EXISTS chats_by_user_b ON chats (user_b, started_at);
CREATE TABLE IF NOT EXISTS memberships (
    user_id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    partner_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS exclusions (
    user_id INTEGER NOT NULL,
    other_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (user_id, other_id)
);
CREATE TABLE IF NOT EXISTS message_links (
    chat_id INTEGER NOT NULL,
    sender_id INTEGER NOT NULL,
    sender_message_id INTEGER NOT NULL,
    recipient_id INTEGER NOT NULL,
    copy_message_id INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    sent_at REAL NOT NULL,
    PRIMARY KEY (sender_id, sender_message_id)
);
CREATE INDEX IF NOT EXISTS message_links_by_copy
    ON message_links (recipient_id, copy_message_id);
CREATE INDEX IF NOT EXISTS message_links_by_chat ON message_links (chat_id, sender_id);
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reporter_id INTEGER NOT NULL,
    reported_id INTEGER NOT NULL,
    chat_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reports_by_time ON reports (created_at);
CREATE INDEX IF NOT EXISTS reports_by_reporter ON reports (reporter_id);
CREATE INDEX IF NOT EXISTS chats_by_start ON chats (started_at);
CREATE INDEX IF NOT EXISTS lobby_by_since ON lobby (since);
"""

# Indexes on columns that _ADDED_COLUMNS may have just added.
_LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS users_due_for_nudge ON users (nudge_pending, last_seen);
"""

# Columns added after a table was first created: (table, column, definition).
_ADDED_COLUMNS = (
    ("users", "analytics_opt_out", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "age_answer", "TEXT"),
    ("users", "age_answered_at", "REAL"),
    ("users", "flood", "TEXT"),
    ("users", "reminders_off", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "nudge_pending", "INTEGER NOT NULL DEFAULT 1"),
    ("users", "reminded_at", "REAL"),
    ("lobby", "offered", "INTEGER NOT NULL DEFAULT 0"),
)

# The state of one user: profile flags, their chat (seen from their side) and lobby entry.
_STATE_QUERY = """
SELECT u.id, u.language, u.blocked, u.banned, u.analytics_opt_out, u.age_answer,
       u.language_code,
       m.chat_id, m.partner_id, p.language, c.started_at, l.since
FROM users u
LEFT JOIN memberships m ON m.user_id = u.id
LEFT JOIN chats c ON c.id = m.chat_id
LEFT JOIN users p ON p.id = m.partner_id
LEFT JOIN lobby l ON l.user_id = u.id
WHERE u.id = ?
"""

# The last N partners of a user, newest first.
_RECENT_PARTNERS = """
SELECT CASE WHEN user_a = :me THEN user_b ELSE user_a END
FROM chats WHERE user_a = :me OR user_b = :me
ORDER BY started_at DESC, id DESC LIMIT :recent
"""

# The longest-waiting compatible user of a language (see Repository.find_partner).
_CANDIDATE_QUERY = """
SELECT l.user_id, l.since FROM lobby l
WHERE l.language = :language AND l.user_id != :me
  AND l.user_id NOT IN (""" + _RECENT_PARTNERS + """)
  AND :me NOT IN (
      SELECT CASE WHEN c.user_a = l.user_id THEN c.user_b ELSE c.user_a END
      FROM chats c WHERE c.user_a = l.user_id OR c.user_b = l.user_id
      ORDER BY c.started_at DESC, c.id DESC LIMIT :recent)
  AND NOT EXISTS (
      SELECT 1 FROM exclusions e
      WHERE (e.user_id = :me AND e.other_id = l.user_id)
         OR (e.user_id = l.user_id AND e.other_id = :me))
ORDER BY l.since, l.user_id
LIMIT 1
"""


class SqliteRepository:
    """The repository port on one SQLite database file."""

    backend = "sqlite"

    def __init__(self, path: str | Path, busy_timeout_s: float = 10.0,
                 flood_rule: FloodRule | None = None) -> None:
        self._flood_rule = flood_rule or FloodRule()
        self._path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    # -- connection handling -------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._ensure_schema(conn)
        return conn

    def _ensure_schema(self, conn: sqlite3.Connection) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                conn.executescript(_SCHEMA)
                for table, column, definition in _ADDED_COLUMNS:
                    existing = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                    if column not in existing:
                        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                conn.executescript(_LATE_INDEXES)
                self._schema_ready = True

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; BEGIN IMMEDIATE takes the write lock before the first read."""
        try:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as error:
            raise StorageUnavailable(f"sqlite: {error}") from None
        try:
            yield conn
        except sqlite3.OperationalError as error:
            conn.execute("ROLLBACK")
            raise StorageUnavailable(f"sqlite: {error}") from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.OperationalError as error:
                conn.execute("ROLLBACK")
                raise StorageUnavailable(f"sqlite: {error}") from None

    def init_schema(self) -> None:
        """Create the tables and indexes if absent (also done on first use)."""
        self._connection()

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- reading state -------------------------------------------------------------------

    @staticmethod
    def _state(
        conn: sqlite3.Connection, user_id: int, *, is_new: bool = False
    ) -> UserState | None:
        row = conn.execute(_STATE_QUERY, (user_id,)).fetchone()
        if row is None:
            return None
        (uid, language, blocked, banned, opt_out, age_answer, language_code, chat_id,
         partner_id, partner_language, started_at, since) = row
        chat = None
        if chat_id is not None:
            chat = ActiveChat(chat_id, partner_id, partner_language or language, started_at)
        return UserState(
            user_id=uid, language=language, is_new=is_new, blocked=bool(blocked),
            banned=bool(banned), chat=chat, waiting_since=since,
            analytics_opt_out=bool(opt_out), age_confirmed=age_answer == "yes",
            language_code=language_code,
        )

    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        with self._transaction(write=False) as conn:
            return self._state(conn, user_id)

    # -- updates and users ---------------------------------------------------------------

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: claim, profile upsert and state in one transaction."""
        with self._transaction() as conn:
            claimed = conn.execute(
                "INSERT OR IGNORE INTO claimed_updates (update_id, claimed_at) VALUES (?, ?)",
                (update_id, now),
            ).rowcount
            if not claimed:
                return OpenedUpdate(duplicate=True)
            if profile is None:
                return OpenedUpdate(duplicate=False)
            known = conn.execute(
                "SELECT flood FROM users WHERE id = ?", (profile.user_id,)
            ).fetchone()
            counters = FloodState(**json.loads(known[0])) if known and known[0] else FloodState()
            counters, verdict = admit(counters, now, album, self._flood_rule)
            conn.execute(
                """
                INSERT INTO users (id, first_name, last_name, username, language_code,
                                   language, first_seen, last_seen, flood)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    first_name = excluded.first_name, last_name = excluded.last_name,
                    username = excluded.username, language_code = excluded.language_code,
                    last_seen = excluded.last_seen, flood = excluded.flood, nudge_pending = 1
                """,
                (profile.user_id, profile.first_name, profile.last_name, profile.username,
                 profile.language_code, default_language, now, now,
                 json.dumps(asdict(counters))),
            )
            state = self._state(conn, profile.user_id, is_new=known is None)
            return OpenedUpdate(duplicate=False, user=state, throttled=verdict.throttled,
                                warn=verdict.warn)

    def release_update(self, update_id: int) -> None:
        """See ``Repository.release_update``."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM claimed_updates WHERE update_id = ?", (update_id,))

    def set_language(self, user_id: int, language: str) -> UserState:
        """See ``Repository.set_language``."""
        with self._transaction() as conn:
            state = self._state(conn, user_id)
            if state is None:
                raise LookupError(f"unknown user {user_id}")
            if state.chat is not None:
                return state
            conn.execute("UPDATE users SET language = ? WHERE id = ?", (language, user_id))
            conn.execute("UPDATE lobby SET language = ? WHERE user_id = ?", (language, user_id))
            new_state = self._state(conn, user_id)
            assert new_state is not None  # noqa: S101 - the row was read in this transaction
            return new_state

    def set_blocked(self, user_id: int, blocked: bool) -> None:
        """See ``Repository.set_blocked``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET blocked = ? WHERE id = ?", (int(blocked), user_id))
            if blocked:
                conn.execute("DELETE FROM lobby WHERE user_id = ?", (user_id,))

    def set_analytics_opt_out(self, user_id: int, opt_out: bool) -> None:
        """See ``Repository.set_analytics_opt_out``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET analytics_opt_out = ? WHERE id = ?",
                         (int(opt_out), user_id))

    def confirm_age(self, user_id: int, confirmed: bool, now: float) -> None:
        """See ``Repository.confirm_age``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET age_answer = ?, age_answered_at = ? WHERE id = ?",
                         ("yes" if confirmed else "no", now, user_id))

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``."""
        with self._transaction(write=False) as conn:
            conn.row_factory = sqlite3.Row
            try:
                row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
                if row is None:
                    return None
                profile = dict(row)
                lobby = conn.execute("SELECT language, since FROM lobby WHERE user_id = ?",
                                     (user_id,)).fetchone()
                profile["lobby"] = dict(lobby) if lobby else None
                chats = [ChatRecord(
                    r["id"], r["user_b"] if r["user_a"] == user_id else r["user_a"],
                    r["language"], r["started_at"], r["ended_at"], r["end_reason"],
                    None if r["ended_by"] is None else r["ended_by"] == user_id)
                    for r in conn.execute(
                        "SELECT * FROM chats WHERE user_a = ? OR user_b = ? ORDER BY id",
                        (user_id, user_id))]
                messages = [MessageLink(
                    r["chat_id"], r["sender_id"], r["sender_message_id"], r["recipient_id"],
                    r["copy_message_id"], r["content_type"], r["sent_at"])
                    for r in conn.execute(
                        "SELECT * FROM message_links WHERE sender_id = ? ORDER BY sent_at",
                        (user_id,))]
                exclusions = [(r["other_id"], r["reason"], r["created_at"]) for r in conn.execute(
                    "SELECT * FROM exclusions WHERE user_id = ?", (user_id,))]
                reports = [(r["reported_id"], r["reason"], r["created_at"], r["status"])
                           for r in conn.execute(
                               "SELECT * FROM reports WHERE reporter_id = ? ORDER BY id",
                               (user_id,))]
            finally:
                conn.row_factory = None
        return UserRecords(profile, chats, messages, exclusions, reports)

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``; each chat gets its own random tombstone id."""
        tombstone = "-(abs(random()) % 4611686018427387903) - 1"
        with self._transaction() as conn:
            counts = {
                "messages": conn.execute(
                    "DELETE FROM message_links WHERE sender_id = ? OR recipient_id = ?",
                    (user_id, user_id)).rowcount,
                "exclusions": conn.execute(
                    "DELETE FROM exclusions WHERE user_id = ? OR other_id = ?",
                    (user_id, user_id)).rowcount,
                "lobby": conn.execute("DELETE FROM lobby WHERE user_id = ?",
                                      (user_id,)).rowcount,
            }
            conn.execute("DELETE FROM memberships WHERE user_id = ? OR partner_id = ?",
                         (user_id, user_id))
            conn.execute(f"UPDATE chats SET ended_by = {tombstone} WHERE ended_by = ?",
                         (user_id,))
            counts["chats_anonymised"] = sum(
                conn.execute(f"UPDATE chats SET {column} = {tombstone} WHERE {column} = ?",
                             (user_id,)).rowcount for column in ("user_a", "user_b"))
            conn.execute(f"UPDATE reports SET reporter_id = {tombstone} WHERE reporter_id = ?",
                         (user_id,))
            # A ban outlives erasure, or /deleteme would lift it: the row keeps only the
            # id and the ban. Reports about the user stay too (the policy says why).
            counts["kept_for_ban"] = conn.execute(
                "UPDATE users SET first_name = '', last_name = NULL, username = NULL,"
                " language_code = NULL, flood = NULL, age_answer = NULL,"
                " age_answered_at = NULL WHERE id = ? AND banned = 1", (user_id,)).rowcount
            counts["profile"] = conn.execute("DELETE FROM users WHERE id = ? AND banned = 0",
                                             (user_id,)).rowcount
        return counts

    def purge_expired(self, now: float, retention: Retention, limit: int) -> dict[str, int]:
        """See ``Repository.purge_expired``: SQLite has no TTL, so this deletes.

        One short write transaction, at most ``limit`` rows of each table.
        """
        def purge(conn: sqlite3.Connection, table: str, expired: str, cutoff: float) -> int:
            return conn.execute(
                f"DELETE FROM {table} WHERE rowid IN"  # the names are ours, the values bound
                f" (SELECT rowid FROM {table} WHERE {expired} LIMIT ?)",
                (cutoff, limit)).rowcount

        with self._transaction() as conn:
            return {
                "messages": purge(conn, "message_links", "sent_at < ?",
                                  now - retention.messages_s),
                "claims": purge(conn, "claimed_updates", "claimed_at < ?",
                                now - retention.claims_s),
                "chats": purge(conn, "chats", "ended_at IS NOT NULL AND ended_at < ?",
                               now - retention.chats_s),
            }

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT id, CASE WHEN user_a = :me THEN user_b ELSE user_a END, language,"
                " started_at, ended_at, end_reason, ended_by FROM chats"
                " WHERE user_a = :me OR user_b = :me ORDER BY started_at DESC, id DESC LIMIT 1",
                {"me": user_id}).fetchone()
        if row is None:
            return None
        chat_id, partner, language, started, ended, reason, ended_by = row
        return ChatRecord(chat_id, partner, language, started, ended, reason,
                          None if ended_by is None else ended_by == user_id)

    def recent_messages(self, chat_id: int, sender_id: int, limit: int) -> list[int]:
        """See ``Repository.recent_messages``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT sender_message_id FROM message_links WHERE chat_id = ? AND sender_id = ?"
                " ORDER BY sender_message_id DESC LIMIT ?", (chat_id, sender_id, limit)).fetchall()
        return sorted(int(row[0]) for row in rows)

    def add_report(self, reporter_id: int, reported_id: int, chat_id: int, reason: str,
                   now: float) -> Report:
        """See ``Repository.add_report``."""
        with self._transaction() as conn:
            report_id = conn.execute(
                "INSERT INTO reports (reporter_id, reported_id, chat_id, reason, created_at,"
                " status) VALUES (?, ?, ?, ?, ?, 'open')",
                (reporter_id, reported_id, chat_id, reason, now)).lastrowid
        assert report_id is not None  # noqa: S101 - an INSERT always sets lastrowid
        return Report(report_id, reporter_id, reported_id, chat_id, reason, now, "open")

    def resolve_report(self, report_id: int, status: str) -> Report | None:
        """See ``Repository.resolve_report``."""
        with self._transaction() as conn:
            changed = conn.execute("UPDATE reports SET status = ? WHERE id = ? AND status = 'open'",
                                   (status, report_id)).rowcount
            row = conn.execute("SELECT id, reporter_id, reported_id, chat_id, reason, created_at,"
                               " status FROM reports WHERE id = ?", (report_id,)).fetchone()
        return Report(*row) if changed and row else None

    def set_banned(self, user_id: int, banned: bool) -> bool:
        """See ``Repository.set_banned``."""
        with self._transaction() as conn:
            found = conn.execute("UPDATE users SET banned = ? WHERE id = ?",
                                 (int(banned), user_id)).rowcount > 0
            if banned:
                conn.execute("DELETE FROM lobby WHERE user_id = ?", (user_id,))
        return found

    def moderation_stats(self, since: float) -> ModerationStats:
        """See ``Repository.moderation_stats``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                """SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM lobby),
                          (SELECT count(*) FROM chats WHERE ended_at IS NULL),
                          (SELECT count(*) FROM chats WHERE started_at >= :since),
                          (SELECT count(*) FROM reports WHERE created_at >= :since)""",
                {"since": since}).fetchone()
        return ModerationStats(*row)

    def claim_nudges(self, idle_before: float, now: float, limit: int) -> list[Nudge]:
        """See ``Repository.claim_nudges``: select and mark in one IMMEDIATE transaction."""
        with self._transaction() as conn:
            rows = conn.execute(
                """SELECT u.id, u.language,
                          CASE WHEN m.user_id IS NOT NULL THEN 'chatting'
                               WHEN l.user_id IS NOT NULL THEN 'waiting' ELSE 'idle' END
                   FROM users u
                   LEFT JOIN memberships m ON m.user_id = u.id
                   LEFT JOIN lobby l ON l.user_id = u.id
                   WHERE u.nudge_pending = 1 AND u.last_seen < ? AND u.blocked = 0
                     AND u.banned = 0 AND u.reminders_off = 0
                   ORDER BY u.last_seen LIMIT ?""", (idle_before, limit)).fetchall()
            conn.executemany("UPDATE users SET nudge_pending = 0, reminded_at = ? WHERE id = ?",
                             [(now, row[0]) for row in rows])
        return [Nudge(int(uid), language, state) for uid, language, state in rows]

    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET nudge_pending = 1 WHERE id = ?", (user_id,))

    def count_idle_excluded(self, idle_before: float) -> dict[str, int]:
        """See ``Repository.count_idle_excluded``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                """SELECT coalesce(sum(blocked), 0),
                          coalesce(sum(banned AND NOT blocked), 0),
                          coalesce(sum(reminders_off AND NOT blocked AND NOT banned), 0)
                   FROM users WHERE nudge_pending = 1 AND last_seen < ?""",
                (idle_before,)).fetchone()
        return {"blocked": int(row[0]), "banned": int(row[1]), "opted_out": int(row[2])}

    def expire_lobby(self, waiting_before: float, limit: int) -> list[tuple[int, str]]:
        """See ``Repository.expire_lobby``."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT user_id, language FROM lobby WHERE since < ?"
                                " ORDER BY since LIMIT ?", (waiting_before, limit)).fetchall()
            conn.executemany("DELETE FROM lobby WHERE user_id = ?", [(r[0],) for r in rows])
        return [(int(user_id), language) for user_id, language in rows]

    def set_reminders(self, user_id: int, enabled: bool) -> None:
        """See ``Repository.set_reminders``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET reminders_off = ? WHERE id = ?",
                         (int(not enabled), user_id))

    def count_messages(self, chat_id: int) -> dict[int, int]:
        """See ``Repository.count_messages``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT sender_id, count(*) FROM message_links WHERE chat_id = ?"
                " GROUP BY sender_id", (chat_id,)).fetchall()
        return {int(sender): int(count) for sender, count in rows}

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float) -> None:
        """See ``Repository.exclude_pair``."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO exclusions (user_id, other_id, reason, created_at)"
                " VALUES (?, ?, ?, ?)",
                (user_id, other_id, reason, now),
            )

    # -- lobby and chats -----------------------------------------------------------------

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``; serialised by the IMMEDIATE write lock."""
        with self._transaction() as conn:
            state = self._state(conn, user_id)
            if state is None:
                raise LookupError(f"unknown user {user_id}")
            if state.chat is not None:
                opened_by = conn.execute(
                    "SELECT opened_by_update FROM chats WHERE id = ?", (state.chat.chat_id,)
                ).fetchone()[0]
                if opened_by == update_id:
                    return MatchResult(MatchOutcome.MATCHED, state.chat, resumed=True)
                return MatchResult(MatchOutcome.IN_CHAT, state.chat)
            entry = conn.execute("SELECT language FROM lobby WHERE user_id = ?",
                                 (user_id,)).fetchone()
            pool = entry[0] if entry else state.language  # "*": the any-language pool
            candidate = conn.execute(
                _CANDIDATE_QUERY, {"language": pool, "me": user_id, "recent": recent_partners},
            ).fetchone()
            if candidate is None:
                was_waiting = state.waiting
                conn.execute(
                    "INSERT OR IGNORE INTO lobby (user_id, language, since) VALUES (?, ?, ?)",
                    (user_id, pool, now),
                )
                waiting = conn.execute(
                    "SELECT count(*) FROM lobby WHERE language = ?", (pool,)
                ).fetchone()[0]
                outcome = MatchOutcome.ALREADY_WAITING if was_waiting else MatchOutcome.WAITING
                return MatchResult(outcome, waiting_count=waiting)
            partner_id, partner_since = candidate
            conn.execute("DELETE FROM lobby WHERE user_id IN (?, ?)", (user_id, partner_id))
            chat_id = conn.execute(
                "INSERT INTO chats (user_a, user_b, language, started_at, opened_by_update)"
                " VALUES (?, ?, ?, ?, ?)",
                (partner_id, user_id, pool, now, update_id),
            ).lastrowid
            conn.executemany(
                "INSERT INTO memberships (user_id, chat_id, partner_id) VALUES (?, ?, ?)",
                [(user_id, chat_id, partner_id), (partner_id, chat_id, user_id)],
            )
            partner_language = conn.execute(
                "SELECT language FROM users WHERE id = ?", (partner_id,)
            ).fetchone()[0]
            assert chat_id is not None  # noqa: S101 - an INSERT always sets lastrowid
            return MatchResult(
                MatchOutcome.MATCHED, ActiveChat(chat_id, partner_id, partner_language, now),
                partner_waiting_since=partner_since,
            )

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
            # A /next never ends the chat it opened itself (see the port).
            opened_here = update_id if reason is EndReason.NEXT else None
            member = conn.execute(
                "SELECT m.chat_id, m.partner_id FROM memberships m JOIN chats c"
                " ON c.id = m.chat_id WHERE m.user_id = ? AND c.opened_by_update IS NOT ?",
                (user_id, opened_here),
            ).fetchone()
            if member is None:
                earlier = conn.execute(
                    "SELECT id, CASE WHEN user_a = :me THEN user_b ELSE user_a END FROM chats"
                    " WHERE (user_a = :me OR user_b = :me) AND closed_by_update = :update",
                    {"me": user_id, "update": update_id},
                ).fetchone()
                if earlier is None:
                    return None
                chat_id, partner_id = earlier
                resumed = True
            else:
                chat_id, partner_id = member
                resumed = False
                conn.execute(
                    "UPDATE chats SET ended_at = ?, ended_by = ?, end_reason = ?,"
                    " closed_by_update = ? WHERE id = ?",
                    (now, user_id, reason.value, update_id, chat_id),
                )
                conn.execute("DELETE FROM memberships WHERE chat_id = ?", (chat_id,))
            partner_language = conn.execute(
                "SELECT language FROM users WHERE id = ?", (partner_id,)
            ).fetchone()
            return EndedChat(
                chat_id, partner_id, partner_language[0] if partner_language else "en", resumed
            )

    # -- message links -------------------------------------------------------------------

    def record_message(self, link: MessageLink) -> None:
        """See ``Repository.record_message``."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO message_links (chat_id, sender_id, sender_message_id,"
                " recipient_id, copy_message_id, content_type, sent_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (link.chat_id, link.sender_id, link.sender_message_id, link.recipient_id,
                 link.copy_message_id, link.content_type, link.sent_at),
            )

    def find_message(self, chat_id: int, user_id: int, message_id: int) -> MessageLink | None:
        """See ``Repository.find_message``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT chat_id, sender_id, sender_message_id, recipient_id, copy_message_id,"
                " content_type, sent_at FROM message_links"
                " WHERE chat_id = :chat AND ((sender_id = :user AND sender_message_id = :msg)"
                "  OR (recipient_id = :user AND copy_message_id = :msg))",
                {"chat": chat_id, "user": user_id, "msg": message_id},
            ).fetchone()
        return MessageLink(*row) if row else None

    # -- statistics ----------------------------------------------------------------------

    def counts(self, user_id: int) -> Counts:
        """See ``Repository.counts``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                """
                SELECT (SELECT count(*) FROM users),
                       (SELECT count(*) FROM chats WHERE ended_at IS NULL),
                       (SELECT count(*) FROM chats WHERE ended_at IS NOT NULL),
                       (SELECT count(*) FROM chats WHERE ended_at IS NOT NULL
                            AND (user_a = :me OR user_b = :me)),
                       (SELECT count(*) FROM lobby)
                """,
                {"me": user_id},
            ).fetchone()
        return Counts(*row)
