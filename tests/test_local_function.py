"""The function as a developer runs it on a laptop: ``functions-framework --target=webhook
--source=main.py`` with no STORAGE stores in SQLite, although functions-framework sets
FUNCTION_TARGET (which once meant "Google Cloud" and picked Firestore, answering 503)."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import pytest

from conftest import SECRET, FunctionServer
from messagine.dev.fake_bot_api import FakeBotApi

pytestmark = pytest.mark.slow

BINARY = Path(sys.executable).parent / "functions-framework"


def test_functions_framework_on_a_laptop_answers_on_sqlite(tmp_path: Path):
    assert BINARY.exists(), f"no functions-framework next to {sys.executable}"
    store = tmp_path / "laptop.sqlite3"
    with FakeBotApi() as api:
        env = {"TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url,
               "WEBHOOK_SECRET": SECRET, "SQLITE_PATH": str(store), "MIN_AGE": "0"}
        server = FunctionServer(env, program=[str(BINARY)],
                                inherit_env=False)
        try:
            alice = api.user(7301, "Alice")
            response = server.post(alice.command("start"))
            log = server.log()
        finally:
            server.stop()
        assert response.status_code == 200, log
        assert alice.last()["text"].startswith("Welcome to Messagine")
    with sqlite3.connect(store) as conn:
        assert conn.execute("SELECT 1 FROM users WHERE id = 7301").fetchone() == (1,)
