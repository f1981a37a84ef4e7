"""The SQLite test store: no server, a file per repository (the registry's test plugin)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from messagine.storage.sqlite import SqliteRepository


class SqliteTestStore:
    """Empty SQLite repositories in the files the tests name."""

    def open(self, where: Path) -> Any:
        """An empty repository in the file ``where``."""
        return SqliteRepository(where)

    def env(self) -> dict[str, str]:
        """The settings that select SQLite (the tests' bot_env names the file)."""
        return {"STORAGE": "sqlite"}

    def drop(self, repository: Any) -> None:
        """Close ``repository``; its file goes with the test's tmp_path."""
        repository.close()

    def simulated(self, work_dir: Path) -> AbstractContextManager[Any]:
        """The simulator's SQLite store in ``work_dir`` (an outage is a long lock)."""
        from support.simulated_backends import sqlite_store

        return sqlite_store(work_dir)


@pytest.fixture(scope="session")
def sqlite_test_store() -> SqliteTestStore:
    """The SQLite test store (see ``messagine.storage.registry``)."""
    return SqliteTestStore()
