"""The function server on a backend's store, with a repository on that same store.

Tests drive the bot through the real HTTP entry point (``FunctionServer``) and read what
it stored through a repository of their own (state) or the raw database (``raw_store``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import FunctionServer, backend_env, bot_env, drop_test_repository
from messagine.dev.fake_bot_api import FakeBotApi, FakeUser
from messagine.settings import Settings
from messagine.storage import open_repository
from support.raw_store import Dump, dump, values


class ServedBot:
    """The function server, its fake Bot API and a repository on the same store."""

    def __init__(self, server: FunctionServer, api: FakeBotApi, repository: Any,
                 sqlite_path: str) -> None:
        self.server, self.api, self.repository = server, api, repository
        self.sqlite_path = sqlite_path

    def send(self, *updates: dict[str, Any]) -> None:
        """Post each update; each must answer 200."""
        for update in updates:
            answer = self.server.post(update)
            assert answer.status_code == 200, self.server.log()

    def partner(self, user: FakeUser) -> int | None:
        """The user's partner in their current chat, if any."""
        state = self.repository.get_user(user.id)
        return None if state is None or state.chat is None else state.chat.partner_id

    def dump(self) -> Dump:
        """Everything the store holds (``support.raw_store.dump``)."""
        return dump(self.repository, self.sqlite_path)

    def stored(self) -> list[Any]:
        """Every scalar the store holds (``support.raw_store.values``)."""
        return values(self.dump())


@contextmanager
def served_bot(request: pytest.FixtureRequest, backend: str, tmp_path: Path,
               **extra: str) -> Iterator[ServedBot]:
    """A ``ServedBot`` on ``backend`` with the extra settings; everything freed after."""
    with FakeBotApi() as api:
        path = tmp_path / "served.sqlite3"
        env = {**bot_env(api, path, **extra), **backend_env(request, backend)}
        repository = open_repository(Settings.from_env(env))
        try:
            server = FunctionServer(env)
            try:
                yield ServedBot(server, api, repository, str(path))
            finally:
                server.stop()
        finally:
            drop_test_repository(request, repository)
