"""The MongoDB client of an instance: its settings, the indexes, and the errors of "not now".

pymongo is imported only by the MongoDB modules.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    WriteConcernError,
    WTimeoutError,
)

from messagine.storage.port import StorageUnavailable

P = ParamSpec("P")
R = TypeVar("R")

SCHEMA_VERSION = 7
"""The version of the indexes below; an instance that finds an older one creates them."""
_UNAVAILABLE = (ConnectionFailure, ExecutionTimeout, WTimeoutError, WriteConcernError)


# Server errors that mean "not now" (a failover, a shutdown, a timeout, a write conflict):
# https://www.mongodb.com/docs/manual/reference/error-codes/
_TRANSIENT_CODES = frozenset({6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602,
                              13435, 13436})


def _transient(error: OperationFailure) -> bool:
    return error.code in _TRANSIENT_CODES or error.has_error_label("RetryableWriteError") \
        or error.has_error_label("TransientTransactionError")


def unavailable_as_storage_error(method: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``method`` so that pymongo's "not now" errors raise ``StorageUnavailable``."""
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


def connect(factory: Callable[..., Any], uri: str) -> Any:
    """The instance's one client, made with ``factory`` (pymongo.MongoClient, or a test's)."""
    # Cloud Functions: a request must answer well inside Telegram's 60 s, so
    # every wait is short (a stalled primary costs at most ~5 s, then 503);
    # an instance serves a few concurrent requests, so a small pool suffices,
    # and idle connections are dropped before the instance is frozen long.
    return factory(
        uri, appname="messagine", retryWrites=True, retryReads=True,
        serverSelectionTimeoutMS=5_000, connectTimeoutMS=3_000,
        socketTimeoutMS=10_000, maxPoolSize=10, maxIdleTimeMS=60_000,
        tz_aware=True,
    )


def create_indexes(db: Any, update_retention_s: int) -> None:
    """Create every index, idempotently, and record their version."""
    db.users.create_index("recent_updates", name="users_by_recent_update")
    db.lobby.create_index([("language", 1), ("since", 1)], name="lobby_by_language")
    db.chats.create_index([("users", 1), ("started_at", -1)], name="chats_by_user")
    db.chats.create_index("ended_at", name="chats_by_end")
    db.chats.create_index("closed_by_update", name="chats_by_closing_update", sparse=True)
    db.exclusions.create_index("other_id", name="exclusions_by_other")
    db.exclusions.create_index("user_id", name="exclusions_by_user")
    db.exclusions.create_index("other_key", name="exclusions_by_key", sparse=True)
    db.reports.create_index("reported_id", name="reports_by_reported")
    db.reports.create_index("reported_key", name="reports_by_key", sparse=True)
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
    db.exclusions.create_index("created_at", name="exclusions_by_time")
    db.users.create_index([("age_answer", 1), ("age_answered_at", 1)], name="users_by_age_answer")
    db.users.create_index("last_seen", name="users_by_last_seen")
    db.users.create_index([("notice_pending", 1), ("banned", 1), ("last_seen", 1)],
                          name="users_due_for_notice")
    db.users.create_index([("notice_pending", 1), ("noticed_at", 1)], name="users_noticed")
    db.claimed_updates.create_index(
        "claimed_at", name="claims_ttl", expireAfterSeconds=update_retention_s)
    db.albums.create_index("expires_at", name="albums_ttl", expireAfterSeconds=0)
    db.meta.replace_one({"_id": "schema"}, {"version": SCHEMA_VERSION}, upsert=True)
