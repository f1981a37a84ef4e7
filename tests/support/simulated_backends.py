"""A store of each backend for the delivery simulator, with a way to take it away.

Used by tests/test_simulator.py (small, in CI) and benchmarks/simulate.py (large, by
hand). Each yields the function instances' settings, a reader of users' states and the
outage switches: SQLite's outage is a long exclusive lock (the file cannot go away),
MongoDB's server is stopped and started again (its data is kept in a file), and
Firestore's emulator is cut off behind a proxy (it keeps its data in memory).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from messagine.models import UserRecords, UserState
from support.mongo_server import MongoServer, mongoeco_python
from support.tcp_proxy import TcpProxy


@dataclass
class SimulatedStore:
    """What the simulator needs of a backend."""

    env: dict[str, str]
    read_state: Callable[[int], UserState | None]
    storage_down: Callable[[], None]
    storage_up: Callable[[], None]
    export_user: Callable[[int], UserRecords | None]
    """Everything stored about a user: the simulator reads when each chat started and ended."""


@contextlib.contextmanager
def sqlite_store(work_dir: Path) -> Iterator[SimulatedStore]:
    from messagine.storage.sqlite import SqliteRepository

    path = work_dir / "simulated.sqlite3"
    reader = SqliteRepository(path)
    reader.init_schema()
    holder: dict[str, sqlite3.Connection] = {}

    def down() -> None:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        holder["lock"] = conn

    def up() -> None:
        conn = holder.pop("lock")
        conn.execute("ROLLBACK")
        conn.close()

    yield SimulatedStore({"STORAGE": "sqlite", "SQLITE_PATH": str(path)}, reader.get_user,
                         down, up, reader.export_user)
    reader.close()


@contextlib.contextmanager
def mongo_store(work_dir: Path) -> Iterator[SimulatedStore]:
    from messagine.storage.mongo import MongoRepository

    python = mongoeco_python()
    if python is None:
        raise LookupError("no mongoeco environment (.venv-mongo): run .ci/run")
    server = MongoServer(python, work_dir / "mongo.sqlite3")
    reader = MongoRepository(server.uri, "simulated")
    try:
        yield SimulatedStore(
            {"STORAGE": "mongo", "MONGODB_URI": server.uri, "MONGODB_DATABASE": "simulated"},
            reader.get_user, server.stop, server.start, reader.export_user)
    finally:
        reader.close()
        server.stop()


@contextlib.contextmanager
def firestore_store(emulator: Any, project: str) -> Iterator[SimulatedStore]:
    from messagine.storage.firestore import FirestoreRepository

    proxy = TcpProxy(emulator.host)
    reader = FirestoreRepository(project, emulator_host=emulator.host)
    try:
        yield SimulatedStore(
            {"STORAGE": "firestore", "FIRESTORE_EMULATOR_HOST": proxy.host,
             "GOOGLE_CLOUD_PROJECT": project},
            reader.get_user, proxy.cut, proxy.restore, reader.export_user)
    finally:
        proxy.cut()
        reader.close()
        emulator.reset(project)


@contextlib.contextmanager
def open_store(backend: str, work_dir: Path, name: str) -> Iterator[SimulatedStore]:
    """A fresh store of ``backend``, with its own server where it needs one (benchmarks)."""
    if backend == "sqlite":
        with sqlite_store(work_dir) as simulated:
            yield simulated
    elif backend == "mongo":
        with mongo_store(work_dir) as simulated:
            yield simulated
    else:
        from support.firestore_emulator import FirestoreEmulator

        emulator = FirestoreEmulator(work_dir / "emulator.log")
        try:
            with firestore_store(emulator, f"demo-{name}") as simulated:
                yield simulated
        finally:
            emulator.stop()
