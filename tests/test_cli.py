"""The command line, run as a real process against the fake Bot API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SECRET, bot_env
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.pipeline import HANDLED_KINDS

pytestmark = pytest.mark.slow


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TELEGRAM_TOKEN", "WEBHOOK_SECRET", "STORAGE")}
    return subprocess.run([sys.executable, "-m", "messagine", *args], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60,
                          check=False)


def test_set_commands_sends_the_menu(fake_api: FakeBotApi, tmp_path: Path):
    result = run(bot_env(fake_api, tmp_path / "db.sqlite3"), "set-commands")
    assert result.returncode == 0, result.stderr
    calls = fake_api.calls_of("setMyCommands")
    assert [c.params.get("language_code") for c in calls] == [
        None, "ar", "de", "es", "fr", "id", "pt", "ru", "tr"], \
        "the default menu, then one per catalog language"
    assert calls[2].params["commands"][0]["description"] == "Jemanden zum Chatten finden"
    names = [c["command"] for c in calls[0].params["commands"]]
    assert names == ["find_chat", "next", "exit_chat", "set_language", "cancel_find", "report",
                     "block", "help", "about", "reminders", "privacy", "mydata", "deleteme"]
    assert all(c["description"] for c in calls[0].params["commands"])


def test_set_webhook_registers_secret_and_update_kinds(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "db.sqlite3")
    result = run(env, "set-webhook", "--url", "https://example.invalid/webhook")
    assert result.returncode == 0, result.stderr
    (call,) = fake_api.calls_of("setWebhook")
    assert call.params["url"] == "https://example.invalid/webhook"
    assert call.params["secret_token"] == SECRET
    assert call.params["allowed_updates"] == list(HANDLED_KINDS)
    assert int(call.params["max_connections"]) == 40
    assert run(env, "set-webhook", "--url", "https://example.invalid/webhook",
               "--max-connections", "100").returncode == 0
    assert int(fake_api.calls_of("setWebhook")[-1].params["max_connections"]) == 100
    assert run(env, "set-webhook", "--url", "https://example.invalid/webhook",
               "--max-connections", "101").returncode == 2
    info = run(env, "webhook-info")
    assert info.returncode == 0 and "https://example.invalid/webhook" in info.stdout
    assert run(env, "delete-webhook").returncode == 0
    assert fake_api.calls_of("deleteWebhook")


def test_set_webhook_needs_https_and_a_secret(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "db.sqlite3")
    plain = run(env, "set-webhook", "--url", "http://example.invalid/")
    assert plain.returncode == 2 and "https://" in plain.stderr
    no_secret = run({**env, "WEBHOOK_SECRET": ""}, "set-webhook", "--url", "https://x.invalid/")
    assert no_secret.returncode == 2 and "WEBHOOK_SECRET is not set" in no_secret.stderr
    assert fake_api.calls == []


def test_a_missing_token_is_a_clear_error(tmp_path: Path):
    result = run({"SQLITE_PATH": str(tmp_path / "db.sqlite3")}, "set-commands")
    assert result.returncode == 2
    assert "TELEGRAM_TOKEN is not set" in result.stderr


def test_a_telegram_error_is_reported(fake_api: FakeBotApi, tmp_path: Path):
    fake_api.fail("setMyCommands", status=400, description="Bad Request: bad command")
    result = run(bot_env(fake_api, tmp_path / "db.sqlite3"), "set-commands")
    assert result.returncode == 1
    assert "setMyCommands: 400 Bad Request: bad command" in result.stderr
    assert fake_api.token not in result.stderr + result.stdout


def test_init_db_creates_the_schema(fake_api: FakeBotApi, tmp_path: Path):
    path = tmp_path / "fresh.sqlite3"
    result = run(bot_env(fake_api, path), "init-db")
    assert result.returncode == 0 and "sqlite storage ready" in result.stdout
    assert path.exists()


def test_poll_runs_updates_through_the_pipeline(fake_api: FakeBotApi, tmp_path: Path):
    alice, bob = fake_api.user(1, "Alice"), fake_api.user(2, "Bob")
    fake_api.pending_updates = [alice.command("find_chat"), bob.command("find_chat"),
                                alice.text("hello over polling")]
    result = run(bot_env(fake_api, tmp_path / "db.sqlite3"), "poll", "--max-batches", "2")
    assert result.returncode == 0, result.stderr
    assert fake_api.calls_of("deleteWebhook")
    assert bob.last()["text"] == "hello over polling"
    offsets = [c.params.get("offset") for c in fake_api.calls_of("getUpdates")]
    assert offsets[-1] == 4, "the next poll confirms the processed updates"


def test_serve_runs_the_webhook_locally(fake_api: FakeBotApi, tmp_path: Path):
    import time

    import requests

    from conftest import free_port

    port = free_port()
    clean = {k: v for k, v in os.environ.items() if k != "TELEGRAM_TOKEN"}
    server = subprocess.Popen(
        [sys.executable, "-m", "messagine", "serve", "--port", str(port)], cwd=ROOT,
        env={**clean, **bot_env(fake_api, tmp_path / "db.sqlite3")},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        update = fake_api.user(5, "Eve").command("start")
        for _ in range(100):
            try:
                response = requests.post(f"http://127.0.0.1:{port}/", json=update, timeout=5,
                                         headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert response.status_code == 200
        assert fake_api.user(5).last()["text"].startswith("Welcome to Messagine")
    finally:
        server.terminate()
        server.wait(10)


def test_the_readme_run_command_without_a_token_brings_up_the_sandbox(tmp_path: Path):
    import socket
    import time

    import requests

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.skip("port 8080 is taken on this machine")
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_TOKEN", "MONGODB_URI")}
    # BROWSER=true makes the "open a browser" step a no-op here.
    server = subprocess.Popen([sys.executable, "-m", "messagine"], cwd=tmp_path,
                              env={**env, "PYTHONPATH": str(ROOT), "BROWSER": "true"},
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        assert "http://127.0.0.1:8080/" in server.stdout.readline()
        for _ in range(100):
            try:
                page = requests.get("http://127.0.0.1:8080/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert page.status_code == 200 and "Messagine sandbox" in page.text
        state = requests.get("http://127.0.0.1:8080/api/state", timeout=5).json()
        assert [u["name"] for u in state["users"]] == ["Alice", "Bob"]
        sent = requests.post("http://127.0.0.1:8080/api/act", timeout=10,
                             json={"user": state["users"][0]["id"], "kind": "text",
                                   "text": "/start"})
        assert sent.json() == {"status": 200}
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
