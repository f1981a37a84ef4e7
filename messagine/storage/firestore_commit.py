"""Firestore's optimistic commits: read, decide, and commit only if nothing changed since.

``Guarded`` is a batch whose writes carry preconditions ("unchanged since read", or
"still absent" for a create); ``optimistic`` runs an operation again when another instance
beat its commit. Deadlines and the errors that mean "not now" are set here too.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type

from messagine.storage.port import StorageUnavailable

P = ParamSpec("P")
R = TypeVar("R")

# A request must answer well inside Telegram's 60 s: each call gets a short budget, and
# transient errors are retried only inside it.
CALL_TIMEOUT_S = 5.0
RETRY = Retry(predicate=if_exception_type(gexc.ServiceUnavailable, gexc.InternalServerError),
               initial=0.05, maximum=0.5, multiplier=2.0, timeout=4.0)
ATTEMPTS = 12  # optimistic commits that lost a race are decided again this many times
CONFLICTS = (gexc.FailedPrecondition, gexc.AlreadyExists, gexc.NotFound, gexc.Aborted)
UNAVAILABLE = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
                gexc.ResourceExhausted, gexc.Unknown, gexc.Cancelled, gexc.RetryError,
                gexc.GatewayTimeout, gexc.Unauthenticated, gexc.PermissionDenied)
CALL = {"retry": RETRY, "timeout": CALL_TIMEOUT_S}
# Writes are not retried by the client: a commit applied whose answer was lost would fail
# its own preconditions on the retry and be taken for another instance's change. An
# unanswered write is StorageUnavailable: Telegram's re-delivery decides again.
WRITE = {"retry": None, "timeout": CALL_TIMEOUT_S}


class ConflictError(Exception):
    """Another instance changed what this operation read; read and decide again."""


def unavailable_as_storage_error(method: Callable[P, R]) -> Callable[P, R]:
    """Wrap ``method`` so that Firestore's "not now" errors raise ``StorageUnavailable``."""
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (*UNAVAILABLE, *CONFLICTS) as error:
            # Conflicts reach here only from outside the retried operations: a query
            # whose index is still building (FailedPrecondition), an aborted read.
            raise StorageUnavailable(f"firestore: {type(error).__name__}") from None

    return wrapper


def optimistic(operation: Callable[P, R]) -> Callable[P, R]:
    """Run ``operation`` again while its optimistic commit is beaten by another instance."""
    @functools.wraps(operation)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        pause = 0.005
        for _ in range(ATTEMPTS):
            try:
                return operation(*args, **kwargs)
            except (ConflictError, *CONFLICTS):
                time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
                pause = min(pause * 2, 0.2)
        raise StorageUnavailable(
            f"firestore: {operation.__name__} kept conflicting with other instances")

    return wrapper


class Guarded:
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
        """Commit the writes, if any; their results (one per write)."""
        if not self.writes:
            return []
        return list(self._batch.commit(**WRITE))


def commit_unless_beaten(client: Any, snap: Any, fields: Mapping[str, Any]) -> bool:
    """Write ``fields`` if the document is still as read; False if someone changed it."""
    batch = Guarded(client, [snap])
    batch.put(snap.reference, fields)
    try:
        batch.commit()
    except CONFLICTS:
        return False
    return True


@optimistic
def update_guarded(client: Any, ref: Any,
                   change: Callable[[dict[str, Any]], Mapping[str, Any] | None]
                   ) -> dict[str, Any] | None:
    """Apply ``change`` to the document as it is now: the document as written, or None.

    None: there is no such document, or ``change`` said None (nothing to write).
    """
    (snap,) = client.get_all([ref], **CALL)
    if not snap.exists or (fields := change(snap.to_dict())) is None:
        return None
    batch = Guarded(client, [snap])
    batch.put(ref, fields)
    batch.commit()
    return {**snap.to_dict(), **fields}


def claim_each(query: Any, limit: int, claim: Callable[[Any], R | None]) -> list[R]:
    """Claim up to ``limit`` of what ``query`` finds; ``claim`` says None when beaten.

    A failure after the first claim returns those claimed so far (as MongoDB's
    ``_claim_each``): the caller acts on them or gives them back, and meets the failure
    on its next call.
    """
    claimed: list[R] = []
    try:
        for _ in range(limit + 3):  # a round that claims nobody still makes progress
            if len(claimed) >= limit:
                break
            found = list(query.limit(limit - len(claimed)).stream(**CALL))
            if not found:
                break
            claimed.extend(r for r in map(claim, found) if r is not None)  # one by one
    except UNAVAILABLE:
        if not claimed:
            raise
    return claimed
