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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from messagine.domain import age_gate, albums, matching
from messagine.domain.albums import Album
from messagine.domain.claims import LEASE_S, Claim, ClaimState, Decision, decide
from messagine.domain.erasure import (
    UNCONFIGURED_PEPPER,
    Tombstones,
    anonymise_chat,
    partner_key,
    protection_key,
    returned,
)
from messagine.domain.flood import FloodRule, admit
from messagine.domain.nudges import activity
from messagine.domain.ratings import RatingRule, RatingVerdict, rate
from messagine.domain.retention import AccountStatus, Cutoffs, chat_idle, erasure_due, notice_due
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
from messagine.storage.sqlite_database import Database

# The state of one user: profile flags, their chat (seen from their side) and lobby entry.
_STATE_QUERY = """
SELECT u.id, u.language, u.blocked, u.banned, u.analytics_opt_out, u.age_answer,
       u.language_code, u.reminders_off, u.newest_message,
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

# One page of a pool's lobby in waiting order, for the matching rule to choose from.
_LOBBY_PAGE = """
SELECT l.user_id, l.language, l.since, coalesce(u.banned, 0), u.age_answer
FROM lobby l LEFT JOIN users u ON u.id = l.user_id
WHERE l.language = ? ORDER BY l.since, l.user_id LIMIT ? OFFSET ?
"""
_PAGE = 50
T = TypeVar("T")


class SqliteRepository:
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

    # -- reading state -------------------------------------------------------------------

    @staticmethod
    def _state(
        conn: sqlite3.Connection, user_id: int, *, is_new: bool = False
    ) -> UserState | None:
        row = conn.execute(_STATE_QUERY, (user_id,)).fetchone()
        if row is None:
            return None
        (uid, language, blocked, banned, opt_out, age_answer, language_code, reminders_off,
         newest, chat_id, partner_id, partner_language, started_at, since) = row
        chat = None
        if chat_id is not None:
            chat = ActiveChat(chat_id, partner_id, partner_language or language, started_at)
        return UserState(
            user_id=uid, language=language, is_new=is_new, blocked=bool(blocked),
            banned=bool(banned), chat=chat, waiting_since=since,
            analytics_opt_out=bool(opt_out), age_confirmed=age_answer == "yes",
            language_code=language_code, reminders_enabled=not reminders_off,
            newest_message=newest,
            age_refused=age_answer == "no",
        )

    def get_user(self, user_id: int) -> UserState | None:
        """See ``Repository.get_user``."""
        with self._transaction(write=False) as conn:
            return self._state(conn, user_id)

    # -- updates and users ---------------------------------------------------------------

    def open_update(
        self, update_id: int, profile: Profile | None, default_language: str, now: float,
        album: str | None = None, owner: str = "", lease_s: float = LEASE_S,
    ) -> OpenedUpdate:
        """See ``Repository.open_update``: claim, profile upsert and state in one transaction."""
        with self._transaction() as conn:
            if profile is None:
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO claimed_updates (update_id, claimed_at) "
                    "VALUES (?, ?)", (update_id, now)).rowcount
                return OpenedUpdate(duplicate=not claimed)
            banned = self._state(conn, profile.user_id)
            if banned is not None and banned.banned:  # claimed alone (domain.erasure)
                claimed = conn.execute(
                    "INSERT OR IGNORE INTO claimed_updates (update_id, claimed_at, owner) "
                    "VALUES (?, ?, ?)", (update_id, now, owner)).rowcount
                return OpenedUpdate(duplicate=not claimed, user=banned)
            row = conn.execute(
                "SELECT state, owner, lease_until, attempts FROM claimed_updates "
                "WHERE update_id = ?", (update_id,)).fetchone()
            existing = None if row is None else Claim(
                update_id, ClaimState(row[0]), row[1] or "", row[2] or 0.0, row[3])
            decision, claim = decide(existing, update_id, owner, now, lease_s)
            if claim is None:
                return OpenedUpdate(duplicate=decision is Decision.DONE,
                                    busy=decision is Decision.BUSY)
            conn.execute(
                """
                INSERT INTO claimed_updates (update_id, claimed_at, state, owner, lease_until,
                                             attempts)
                VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT (update_id) DO UPDATE SET
                    state = excluded.state, owner = excluded.owner,
                    lease_until = excluded.lease_until, attempts = excluded.attempts
                """,
                (update_id, now, claim.state.value, claim.owner, claim.lease_until,
                 claim.attempts))
            known = conn.execute(
                "SELECT flood FROM users WHERE id = ?", (profile.user_id,)
            ).fetchone()
            counters = docs.flood_state({"flood": json.loads(known[0]) if known and known[0]
                                         else None})
            counters, verdict = admit(counters, now, album, self._flood_rule)
            conn.execute(
                """
                INSERT INTO users (id, first_name, last_name, username, language_code,
                                   language, first_seen, last_seen, flood)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (id) DO UPDATE SET
                    first_name = excluded.first_name, last_name = excluded.last_name,
                    username = excluded.username, language_code = excluded.language_code,
                    last_seen = excluded.last_seen, flood = excluded.flood, nudge_pending = 1,
                    notice_pending = 1
                """,
                (profile.user_id, profile.first_name, profile.last_name, profile.username,
                 profile.language_code, default_language, now, now,
                 json.dumps(asdict(counters))),
            )
            state = self._state(conn, profile.user_id, is_new=known is None)
            if state is not None and state.age_refused:  # domain.age_gate.stores_profile
                forgotten = docs.forgotten_profile()
                conn.execute(f"UPDATE users SET {', '.join(f'{k} = :{k}' for k in forgotten)}"
                             " WHERE id = :id", {**forgotten, "id": profile.user_id})
            return OpenedUpdate(duplicate=False, user=state, throttled=verdict.throttled,
                                warn=verdict.warn, resumed=decision is Decision.TAKE_OVER)

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
            stored = conn.execute("SELECT age_answer FROM users WHERE id = ?",
                                  (user_id,)).fetchone()
            if stored is not None and age_gate.replaces(stored[0], confirmed):
                conn.execute("UPDATE users SET age_answer = ?, age_answered_at = ? WHERE id = ?",
                             (age_gate.answer(confirmed), now, user_id))
            if not confirmed:  # an erased user's refusal leaves the marker
                marker = docs.user_row(docs.refusal_marker_document(user_id, now)) | {"id": user_id}
                conn.execute(f"INSERT OR IGNORE INTO users ({', '.join(marker)})"
                             f" VALUES ({', '.join(':' + k for k in marker)})", marker)

    def export_user(self, user_id: int) -> UserRecords | None:
        """See ``Repository.export_user``: rows name their columns as the documents do."""
        with self._transaction(write=False) as conn:
            def rows(sql: str) -> list[dict[str, Any]]:
                cursor = conn.execute(sql, {"me": user_id})
                names = [column[0] for column in cursor.description]
                return [dict(zip(names, row, strict=True)) for row in cursor]

            user = rows("SELECT * FROM users WHERE id = :me")
            if not user:
                return None
            lobby = rows("SELECT * FROM lobby WHERE user_id = :me")
            chats = rows("SELECT *, json_array(user_a, user_b) AS users FROM chats"
                         " WHERE user_a = :me OR user_b = :me")
            return docs.user_records(
                user_id, {**user[0], "flood": json.loads(user[0]["flood"] or "{}")},
                lobby[0] if lobby else None,
                ((c["id"], {**c, "users": json.loads(c["users"])}) for c in chats),
                rows("SELECT * FROM message_links WHERE sender_id = :me OR recipient_id = :me"),
                rows("SELECT * FROM exclusions WHERE user_id = :me OR other_id = :me"),
                ((r["id"], r) for r in rows(
                    "SELECT * FROM reports WHERE reporter_id = :me OR reported_id = :me")),
                ((r["key"], json.loads(r["doc"])) for r in rows(
                    "SELECT key, doc FROM albums WHERE json_extract(doc, '$.sender_id') = :me")))

    def delete_user(self, user_id: int) -> dict[str, int]:
        """See ``Repository.delete_user``."""
        stones, key = Tombstones(), protection_key(self._pepper, user_id)
        with self._transaction() as conn:
            counts = {
                "messages": conn.execute(
                    "DELETE FROM message_links WHERE sender_id = ? OR recipient_id = ?",
                    (user_id, user_id)).rowcount,
                "exclusions": conn.execute(
                    "DELETE FROM exclusions WHERE user_id = ?", (user_id,)).rowcount,
                "lobby": conn.execute("DELETE FROM lobby WHERE user_id = ?",
                                      (user_id,)).rowcount,
            }
            counts["messages"] += conn.execute(  # an album on its way: message ids too
                "DELETE FROM albums WHERE json_extract(doc, '$.sender_id') = ?",
                (user_id,)).rowcount
            conn.execute("DELETE FROM memberships WHERE user_id = ? OR partner_id = ?",
                         (user_id, user_id))
            chats = conn.execute("SELECT id, user_a, user_b, ended_by FROM chats"
                                 " WHERE user_a = ? OR user_b = ?", (user_id, user_id)).fetchall()
            for chat_id, user_a, user_b, ended_by in chats:
                changed = anonymise_chat((user_a, user_b), ended_by, user_id,
                                         stones.of(user_b if user_a == user_id else user_a))
                assert changed is not None  # noqa: S101 - the query selected their chats
                conn.execute("UPDATE chats SET user_a = ?, user_b = ?, ended_by = ?, erased_key = ?"
                             " WHERE id = ?", (*changed.users, changed.ended_by, key, chat_id))
            counts["chats_anonymised"] = len(chats)
            conn.executemany("UPDATE reports SET reporter_id = ? WHERE id = ?", [
                (stones.of(other), report_id) for report_id, other in conn.execute(
                    "SELECT id, reported_id FROM reports WHERE reporter_id = ?",
                    (user_id,)).fetchall()])
            # Others' protections stay (domain.erasure): their exclusions and reports.
            conn.executemany(
                "UPDATE exclusions SET other_id = ?, other_key = ? WHERE user_id = ?"
                " AND other_id = ?", [(stones.of(other), key, other, user_id) for (other,) in
                                      conn.execute("SELECT user_id FROM exclusions"
                                                   " WHERE other_id = ?", (user_id,)).fetchall()])
            conn.executemany(
                "UPDATE reports SET reported_id = ?, reported_key = ? WHERE id = ?", [
                    (stones.of(other), key, report_id) for report_id, other in conn.execute(
                        "SELECT id, reporter_id FROM reports WHERE reported_id = ?",
                        (user_id,)).fetchall()])
            # A ban outlives erasure (domain.erasure): only the banned remnant stays. Its
            # columns are named as the documents' fields; the rest live in other tables.
            remnant = {k: v for k, v in docs.remnant_document(user_id).items()
                       if k not in ("chat", "waiting_since")} | {"flood": None}
            counts["kept_for_ban"] = conn.execute(
                f"UPDATE users SET {', '.join(f'{k} = :{k}' for k in remnant)}"
                " WHERE id = :user AND banned = 1", {**remnant, "user": user_id}).rowcount
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
                                now - retention.claims_s)
                + purge(conn, "albums", "expires_at < ?", now),  # an album is a claim too
                "chats": purge(conn, "chats", "ended_at IS NOT NULL AND ended_at < ?",
                               now - retention.chats_s),
                "reports": purge(conn, "reports", "created_at < ? AND ban_on_return = 0",  # a ban
                                 now - retention.reports_s),  # stays (outlives_period)
                "exclusions": purge(conn, "exclusions", "created_at < ?",
                                    now - retention.exclusions_s),
                "age_refusals": purge(conn, "users", "age_answer = 'no' AND banned = 0"
                                      " AND age_answered_at < ?", now - retention.age_refusals_s),
            }

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
            rows = [r for r in conn.execute(
                "SELECT id, language, last_seen, age_answer FROM users WHERE notice_pending = 1"
                " AND banned = 0 AND last_seen < ? ORDER BY last_seen LIMIT ?",
                (cut.notice_seen_before, limit)) if notice_due(
                    AccountStatus(r[2], True, None, False, r[3] == "no"), cut)]
            conn.executemany("UPDATE users SET notice_pending = 0, noticed_at = ? WHERE id = ?",
                             [(now, r[0]) for r in rows])
        return [(int(r[0]), r[1]) for r in rows]

    def inactive_accounts(self, cut: Cutoffs, limit: int) -> list[int]:
        """See ``Repository.inactive_accounts``."""
        with self._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT id, last_seen, noticed_at, age_answer FROM users WHERE notice_pending = 0"
                " AND banned = 0 AND noticed_at < ? ORDER BY noticed_at LIMIT ?",
                (cut.noticed_before, limit)).fetchall()
        return [int(r[0]) for r in rows
                if erasure_due(AccountStatus(r[1], False, r[2], False, r[3] == "no"), cut)]

    def last_chat(self, user_id: int) -> ChatRecord | None:
        """See ``Repository.last_chat``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT id, CASE WHEN user_a = :me THEN user_b ELSE user_a END, language,"
                " started_at, ended_at, end_reason, ended_by, erased_key FROM chats"
                " WHERE user_a = :me OR user_b = :me ORDER BY started_at DESC, id DESC LIMIT 1",
                {"me": user_id}).fetchone()
        if row is None:
            return None
        chat_id, partner, language, started, ended, reason, ended_by, erased_key = row
        return ChatRecord(chat_id, partner, language, started, ended, reason,
                          None if ended_by is None else ended_by == user_id,
                          partner_key=partner_key(partner, erased_key))

    def chat_of(self, user_id: int, chat_id: int) -> ChatRecord | None:
        """See ``Repository.chat_of``."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT user_a, user_b, language, started_at, ended_at, end_reason, ended_by"
                " FROM chats WHERE id = :chat AND :me IN (user_a, user_b)",
                {"chat": chat_id, "me": user_id}).fetchone()
        if row is None:
            return None
        names = ("language", "started_at", "ended_at", "end_reason", "ended_by")
        return docs.chat_record(chat_id, {"users": row[:2], **dict(zip(names, row[2:],
                                                                        strict=True))}, user_id)

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
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM reports WHERE reporter_id = ? AND chat_id = ?",
                            (reporter_id, chat_id)).fetchone():
                return None
            report_id = conn.execute(
                "INSERT INTO reports (reporter_id, reported_id, chat_id, reason, created_at,"
                " status, reported_key) VALUES (?, ?, ?, ?, ?, 'open', ?)",
                (reporter_id, reported_id, chat_id, reason, now, reported_key)).lastrowid
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
                """SELECT u.id, u.language, m.user_id IS NOT NULL, l.user_id IS NOT NULL
                   FROM users u
                   LEFT JOIN memberships m ON m.user_id = u.id
                   LEFT JOIN lobby l ON l.user_id = u.id
                   WHERE u.nudge_pending = 1 AND u.last_seen < ? AND u.blocked = 0
                     AND u.banned = 0 AND u.reminders_off = 0
                   ORDER BY u.last_seen LIMIT ?""", (idle_before, limit)).fetchall()
            conn.executemany("UPDATE users SET nudge_pending = 0, reminded_at = ? WHERE id = ?",
                             [(now, row[0]) for row in rows])
        return [Nudge(int(uid), language, activity(bool(chatting), bool(waiting)))
                for uid, language, chatting, waiting in rows]

    def release_nudge(self, user_id: int) -> None:
        """See ``Repository.release_nudge``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET nudge_pending = 1 WHERE id = ?", (user_id,))

    def release_inactivity_notice(self, user_id: int) -> None:
        """See ``Repository.release_inactivity_notice``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET notice_pending = 1 WHERE id = ?", (user_id,))

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

    def note_newest(self, user_id: int, message_id: int) -> None:
        """See ``Repository.note_newest``."""
        with self._transaction() as conn:
            conn.execute("UPDATE users SET newest_message = MAX(newest_message, ?) WHERE id = ?",
                         (message_id, user_id))

    def rate_user(self, rated_id: int, chat_id: int, positive: bool, now: float,
                  rule: RatingRule) -> RatingVerdict:
        """See ``Repository.rate_user``: read, rule and write in one transaction."""
        with self._transaction() as conn:
            row = conn.execute("SELECT ratings FROM users WHERE id = ?", (rated_id,)).fetchone()
            if row is None:
                return RatingVerdict(counted=False)
            state, verdict = rate(docs.rating_state(row[0]), chat_id, positive, now, rule)
            conn.execute("UPDATE users SET ratings = ? WHERE id = ?",
                         (json.dumps(docs.rating_document(state)), rated_id))
        return verdict

    def exclude_pair(self, user_id: int, other_id: int, reason: str, now: float,
                     other_key: str | None = None) -> None:
        """See ``Repository.exclude_pair``."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO exclusions (user_id, other_id, reason, created_at,"
                " other_key) VALUES (?, ?, ?, ?, ?)",
                (user_id, other_id, reason, now, other_key),
            )

    def ban_erased(self, report_id: int) -> list[int] | None:
        """See ``Repository.ban_erased``."""
        with self._transaction() as conn:
            row = conn.execute("SELECT reported_key FROM reports WHERE id = ?",
                               (report_id,)).fetchone()
            if row is None or row[0] is None:
                return None
            conn.execute("UPDATE reports SET ban_on_return = 1 WHERE id = ?", (report_id,))
            back = returned(self._pepper, row[0], (u for (u,) in conn.execute(
                "SELECT user_id FROM lobby")))
        return [user_id for user_id in back if self.set_banned(user_id, banned=True)]

    def apply_erased_ban(self, user_id: int) -> bool:
        """See ``Repository.apply_erased_ban``."""
        with self._transaction(write=False) as conn:
            if conn.execute("SELECT 1 FROM reports WHERE reported_key = ? AND ban_on_return = 1",
                            (protection_key(self._pepper, user_id),)).fetchone() is None:
                return False
        return self.set_banned(user_id, banned=True)

    # -- lobby and chats -----------------------------------------------------------------

    def find_partner(
        self, user_id: int, recent_partners: int, now: float, update_id: int
    ) -> MatchResult:
        """See ``Repository.find_partner``; serialised by the IMMEDIATE write lock."""
        with self._transaction() as conn:
            state = self._state(conn, user_id)
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
                user_id, pool, self._avoided(conn, user_id, recent_partners)), recent_partners)
            if candidate is None:
                was_waiting = state.waiting
                conn.execute(
                    "INSERT OR IGNORE INTO lobby (user_id, language, since) VALUES (?, ?, ?)",
                    (user_id, pool, now),
                )
                return matching.queued(was_waiting, conn.execute(
                    "SELECT count(*) FROM lobby WHERE language = ?", (pool,)).fetchone()[0])
            partner_id, partner_since = candidate.user_id, candidate.since
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

    @staticmethod
    def _recent_partners(conn: sqlite3.Connection, user_id: int, recent: int) -> list[int]:
        return [int(row[0]) for row in conn.execute(
            _RECENT_PARTNERS, {"me": user_id, "recent": recent})]

    def _avoided(self, conn: sqlite3.Connection, user_id: int, recent: int) -> frozenset[int]:
        """Whom the user must not meet: recent partners, exclusions either way, by key too."""
        key = protection_key(self._pepper, user_id)
        return matching.avoided(user_id, self._recent_partners(conn, user_id, recent), (
            conn.execute("SELECT user_id, other_id, other_key FROM exclusions WHERE"
                         " user_id = :me OR other_id = :me OR other_key = :key",
                         {"me": user_id, "key": key})), key)

    def _choose(self, conn: sqlite3.Connection, seeker: matching.Seeker,
                recent: int) -> matching.Candidate | None:
        """The matching rule's choice from the seeker's pool, read a page at a time."""
        for offset in itertools.count(0, _PAGE):
            rows = conn.execute(_LOBBY_PAGE, (seeker.pool, _PAGE, offset)).fetchall()
            chosen = matching.pick(seeker, (matching.Candidate(
                other, pool, since, self._avoided(conn, other, recent),
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
                chat_id, partner_id, _ = member
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
