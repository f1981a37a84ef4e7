"""Matching: 1,000 users searching at once across 4 processes, per backend.

    .venv/bin/python benchmarks/matching.py [--users 1000] [--processes 4] [--backend sqlite]
    (--backend mongo needs MONGODB_URI, e.g. the mongoeco server of the tests;
     --backend firestore uses FIRESTORE_EMULATOR_HOST, or starts the emulator)

Prints pairs made per second and checks that exactly users/2 pairs form with nobody
left waiting.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common  # noqa: F401 - puts the project on sys.path

from messagine.domain.flood import FloodRule
from messagine.models import MatchOutcome, Profile


def open_repository(spec: tuple[str, str]) -> Any:
    backend, where = spec
    if backend == "sqlite":
        from messagine.storage.sqlite import SqliteRepository

        return SqliteRepository(where, busy_timeout_s=60, flood_rule=FloodRule(limit=10**6))
    if backend == "firestore":
        from messagine.storage.firestore import FirestoreRepository

        return FirestoreRepository(where, emulator_host=os.environ["FIRESTORE_EMULATOR_HOST"],
                                   flood_rule=FloodRule(limit=10**6))
    from messagine.storage.mongo import MongoRepository

    return MongoRepository(os.environ["MONGODB_URI"], where, flood_rule=FloodRule(limit=10**6))


@contextlib.contextmanager
def emulator_if_needed(backend: str, tmp: Path) -> Iterator[None]:
    """Start the Firestore emulator when Firestore is asked for and none is given."""
    if backend != "firestore" or os.environ.get("FIRESTORE_EMULATOR_HOST"):
        yield
        return
    from support.firestore_emulator import FirestoreEmulator

    emulator = FirestoreEmulator(tmp / "emulator.log")
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator.host
    try:
        yield
    finally:
        emulator.stop()


def worker(spec: tuple[str, str], users: list[int], start: Any, out: Any) -> None:
    repo = open_repository(spec)
    start.wait()
    matched = sum(repo.find_partner(u, 5, time.time(), 10**6 + u).outcome
                  is MatchOutcome.MATCHED for u in users)
    out.put(matched)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--backend", choices=["sqlite", "mongo", "firestore"],
                        default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, emulator_if_needed(args.backend, Path(tmp)):
        where = (str(Path(tmp) / "matching.sqlite3") if args.backend == "sqlite"
                 else f"demo-matching-{os.getpid()}" if args.backend == "firestore"
                 else f"bench_matching_{os.getpid()}")
        spec = (args.backend, where)
        repo = open_repository(spec)
        for user in range(1, args.users + 1):
            repo.open_update(user, Profile(user, "U", None, None, None), "en", time.time())
        context = multiprocessing.get_context("spawn")
        start, out = context.Event(), context.Queue()
        shares = [list(range(1 + i, args.users + 1, args.processes))
                  for i in range(args.processes)]
        workers = [context.Process(target=worker, args=(spec, share, start, out))
                   for share in shares]
        for process in workers:
            process.start()
        time.sleep(1.0)
        began = time.perf_counter()
        start.set()
        matched = sum(out.get(timeout=600) for _ in workers)
        elapsed = time.perf_counter() - began
        for process in workers:
            process.join()
        counts = repo.counts(1)
        print(f"{args.users} users, {args.processes} processes, {args.backend}: "
              f"{matched} pairs in {elapsed:.2f} s = {matched / elapsed:.0f} pairs/s; "
              f"active chats {counts.active_chats}, waiting {counts.waiting}")
        assert matched == args.users // 2 == counts.active_chats and counts.waiting == 0
        if args.backend == "mongo":
            repo.db.client.drop_database(where)


if __name__ == "__main__":
    main()
