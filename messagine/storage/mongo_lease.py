"""The lease on one MongoDB lobby pool, which serialises pairing across instances.

A conditional upsert on the pool's lock document succeeds for exactly one instance; it
holds the lease for a few commands and loses it after a few seconds if it dies. A
pairing is written into the lock document first as an intent, which the next holder
rolls forward (docs/storage.md).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from messagine.storage.port import StorageUnavailable

_LOCK_LEASE_S = 5.0
_LOCK_WAIT_S = 8.0


class PoolLease:
    """A lease on one language pool: held for a few commands, expiring if its holder dies."""

    def __init__(self, locks: Any, key: str,
                 roll_forward: Callable[[Mapping[str, Any]], object]) -> None:
        """``locks``: the collection; ``roll_forward`` finishes a pairing left as an intent."""
        self._locks = locks
        self._key = key
        self._roll_forward = roll_forward
        self._token = secrets.token_hex(8)

    def __enter__(self) -> PoolLease:
        locks = self._locks
        deadline = time.monotonic() + _LOCK_WAIT_S
        pause = 0.002
        while True:
            now = time.time()
            try:
                held = locks.find_one_and_update(
                    {"_id": self._key, "until": {"$lt": now}},
                    {"$set": {"holder": self._token, "until": now + _LOCK_LEASE_S}},
                    upsert=True, return_document=ReturnDocument.AFTER)
            except DuplicateKeyError:
                held = None  # another instance holds the lease
            if held is not None:
                if held.get("intent"):
                    # The previous holder died half way through a pairing: finish it.
                    self._roll_forward(held["intent"])
                    self.clear_intent()
                return self
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"mongo: {self._key} stayed locked")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def record_intent(self, intent: Mapping[str, Any]) -> None:
        """Write the pairing about to be applied, for the next holder if this one dies.

        Raises ``StorageUnavailable`` if the lease has passed to another holder: this one
        stalled past it, and what it read under the lease may be stale.
        """
        recorded = self._locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$set": {"intent": dict(intent)}})
        if not recorded.matched_count:
            raise StorageUnavailable(f"mongo: the lease on {self._key} expired")

    def clear_intent(self) -> None:
        """Forget the intent: the pairing is applied."""
        self._locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$unset": {"intent": ""}})

    def __exit__(self, *exc: object) -> None:
        self._locks.update_one(
            {"_id": self._key, "holder": self._token}, {"$set": {"until": 0.0}})
