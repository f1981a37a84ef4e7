"""mongoeco's MongoDB wire-protocol server on 127.0.0.1, for the tests and benchmarks.

It keeps its data in a file, so it can be stopped and started again (an outage) without
losing anything. It runs on Python 3.13 in its own environment (.venv-mongo). As the
registry's test plugin for MongoDB it defines the fixtures ``mongo_uri`` (one server per
session) and ``mongo_test_store`` (a database of its own per repository).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mongoeco_python() -> str | None:
    """The interpreter that has mongoeco, if this machine has one."""
    candidate = os.environ.get("MONGOECO_PYTHON") or str(ROOT / ".venv-mongo" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


class MongoServer:
    """mongoeco's MongoDB wire-protocol server on 127.0.0.1, data kept in a file."""

    def __init__(self, python: str, data: Path) -> None:
        self.python = python
        self.data = data
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.python, str(ROOT / "tests" / "support" / "mongoeco_server.py"),
             str(self.port), str(self.data)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"the MongoDB test server did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()


_database_names = itertools.count(1)


def mongo_database_name() -> str:
    """A database name no other test (or test process) uses."""
    return f"messagine_test_{os.getpid()}_{next(_database_names)}"


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A MongoDB to test against: MONGODB_TEST_URI if set, else a local mongoeco server."""
    if os.environ.get("MONGODB_TEST_URI"):
        yield os.environ["MONGODB_TEST_URI"]
        return
    python = mongoeco_python()
    if python is None:
        if os.environ.get("MESSAGINE_REQUIRE_MONGO") == "1":
            pytest.fail("no mongoeco environment (.venv-mongo) although MongoDB is required")
        pytest.skip("no MongoDB: set MONGODB_TEST_URI or run .ci/run (makes .venv-mongo)")
    server = MongoServer(python, tmp_path_factory.mktemp("mongo") / "data.sqlite3")
    yield server.uri
    server.stop()


class MongoTestStore:
    """Empty MongoDB repositories, each in a database of its own, on one server."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def open(self, where: Path) -> Any:
        """An empty repository in a new database (``where`` is for file-based stores)."""
        from messagine.storage.mongo import MongoRepository

        del where
        return MongoRepository(self.uri, mongo_database_name())

    def env(self) -> dict[str, str]:
        """The settings that select MongoDB, in a new database."""
        return {"STORAGE": "mongo", "MONGODB_URI": self.uri,
                "MONGODB_DATABASE": mongo_database_name()}

    def drop(self, repository: Any) -> None:
        """Drop ``repository``'s database and close it."""
        repository.db.client.drop_database(repository.db.name)
        repository.close()

    def simulated(self, work_dir: Path) -> AbstractContextManager[Any]:
        """The simulator's MongoDB store: a server of its own, since an outage stops it."""
        from support.simulated_backends import mongo_store

        return mongo_store(work_dir)


@pytest.fixture(scope="session")
def mongo_test_store(mongo_uri: str) -> MongoTestStore:
    """The MongoDB test store (see ``messagine.storage.registry``)."""
    return MongoTestStore(mongo_uri)
