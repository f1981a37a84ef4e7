"""The SQLite database file: its tables, connections and transactions.

Safe across processes sharing one file: WAL mode, a busy timeout, and every write as one
``BEGIN IMMEDIATE`` transaction, which takes the database's single write lock up front so
that read-decide-write sequences (matching, ending a chat) are serialised. Each thread
gets its own connection, since function instances serve requests on threads. The schema
is made on first use, idempotently: columns added since a database was made are added.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
CREATE TABLE IF NOT EXISTS albums (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

# Indexes on columns that _ADDED_COLUMNS may have just added.
_LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS users_due_for_nudge ON users (nudge_pending, last_seen);
CREATE INDEX IF NOT EXISTS users_due_for_notice ON users (notice_pending, last_seen);
CREATE INDEX IF NOT EXISTS users_noticed ON users (notice_pending, noticed_at);
CREATE INDEX IF NOT EXISTS users_by_last_seen ON users (last_seen);
CREATE INDEX IF NOT EXISTS exclusions_by_key ON exclusions (other_key);
CREATE INDEX IF NOT EXISTS exclusions_by_other ON exclusions (other_id);
CREATE INDEX IF NOT EXISTS reports_by_key ON reports (reported_key);
CREATE INDEX IF NOT EXISTS reports_by_reported ON reports (reported_id);
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
    ("users", "ratings", "TEXT"),
    ("users", "newest_message", "INTEGER NOT NULL DEFAULT 0"),
    ("users", "notice_pending", "INTEGER NOT NULL DEFAULT 1"),
    ("users", "noticed_at", "REAL"),
    ("lobby", "offered", "INTEGER NOT NULL DEFAULT 0"),
    ("exclusions", "other_key", "TEXT"),
    ("reports", "reported_key", "TEXT"),
    ("chats", "erased_key", "TEXT"),
    ("reports", "ban_on_return", "INTEGER NOT NULL DEFAULT 0"),
    ("claimed_updates", "state", "TEXT NOT NULL DEFAULT 'done'"),
    ("claimed_updates", "owner", "TEXT"),
    ("claimed_updates", "lease_until", "REAL"),
    ("claimed_updates", "attempts", "INTEGER NOT NULL DEFAULT 1"),
)


def _create(conn: sqlite3.Connection) -> None:
    """Create the tables, add the columns and indexes a database lacks (idempotent)."""
    conn.executescript(_SCHEMA)
    for table, column, definition in _ADDED_COLUMNS:
        existing = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in existing:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    conn.executescript(_LATE_INDEXES)


class Database:
    """One database file: a connection per thread, and transactions on it."""

    def __init__(self, path: str | Path, busy_timeout_s: float) -> None:
        self._path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    def connection(self) -> sqlite3.Connection:
        """The calling thread's connection, opened (and the schema made) on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._busy_timeout_s, isolation_level=None
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._schema_lock:
                if not self._schema_ready:
                    _create(conn)
                    self._schema_ready = True
        return conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction; BEGIN IMMEDIATE takes the write lock before the first read.

        Asked for inside this thread's open transaction, it is that one: a shared
        operation's reads (``storage.shared``) then see what the adapter's transaction
        has written, under its lock.
        """
        try:
            conn = self.connection()
            joined = conn.in_transaction
            if not joined:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.OperationalError as error:
            raise StorageUnavailable(f"sqlite: {error}") from None
        if joined:
            yield conn
            return
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as error:
            conn.execute("ROLLBACK")
            if isinstance(error, sqlite3.OperationalError):  # locked, busy, disk I/O
                raise StorageUnavailable(f"sqlite: {error}") from None
            raise

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
