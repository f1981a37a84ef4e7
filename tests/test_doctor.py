"""The doctor against the fake Bot API (over HTTP) and each local store: healthy, then each
fault reported in plain words with its fix, and a non-zero exit status."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    BACKENDS,
    ROOT,
    SECRET,
    FunctionServer,
    backend_env,
    bot_env,
    drop_test_repository,
)
from messagine import cli, doctor
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.pipeline import HANDLED_KINDS
from messagine.runtime import build_runtime
from messagine.settings import Settings


@dataclass(frozen=True)
class Deployment:
    """The deployment's settings and its function's URL."""

    env: dict[str, str]
    url: str


@pytest.fixture(params=BACKENDS)
def deployment(request: pytest.FixtureRequest, fake_api: FakeBotApi, tmp_path: Path
               ) -> Iterator[Deployment]:
    """A healthy deployment on each backend: the function served, its schema, webhook and
    menus set as the build does."""
    env = {**bot_env(fake_api, tmp_path / "bot.sqlite3"), **backend_env(request, request.param)}
    runtime = build_runtime(Settings.from_env(env))
    runtime.repository.init_schema()
    server = FunctionServer(env)
    # set-webhook wants https; the test's server speaks http on loopback.
    runtime.telegram.set_webhook(server.url, SECRET, HANDLED_KINDS, cli.WEBHOOK_MAX_CONNECTIONS)
    assert cli.set_commands(runtime) == 0
    yield Deployment(env, server.url)
    server.stop()
    if request.param != "sqlite":
        drop_test_repository(request, runtime.repository)


def run_doctor(deployment: Deployment, url: str | None = None, **env: str) -> tuple[int, str]:
    out = io.StringIO()
    status = doctor.run({**deployment.env, **env}, url or deployment.url, out)
    return status, out.getvalue()


def failures(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("FAIL")]


def test_a_healthy_deployment_passes_every_check(deployment: Deployment):
    status, report = run_doctor(deployment)
    assert status == 0, report
    assert failures(report) == [] and report.endswith("all checks passed\n")
    for said in ("settings are valid", "reachable", "indexes",
                 f"delivers to the function ({deployment.url}",
                 "function refuses requests without the secret",
                 "function accepts this WEBHOOK_SECRET",
                 "update kinds: message, edited_message, callback_query, my_chat_member",
                 "max_connections is 40", "0 updates waiting", "no delivery error",
                 "command menu is set in all 9 languages"):
        assert said in report, said


def fix_of(report: str, problem: str) -> str:
    """The fix printed under the problem line that contains ``problem``."""
    lines = report.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("FAIL") and problem in line)
    assert lines[at + 1].startswith("     fix: "), report
    return lines[at + 1].removeprefix("     fix: ")


def test_a_wrong_webhook_url_is_found(deployment: Deployment, fake_api: FakeBotApi):
    fake_api.webhook["url"] = "https://messagine-old-ew.a.run.app"
    status, report = run_doctor(deployment)
    assert status == 1
    assert fix_of(report, "Telegram delivers to https://messagine-old-ew.a.run.app, not to "
                  "the function") == f"python -m messagine set-webhook --url {deployment.url}"
    assert len(failures(report)) == 1, report


def test_a_secret_the_function_does_not_have_is_found(deployment: Deployment):
    status, report = run_doctor(deployment, WEBHOOK_SECRET="another-secret_0123456789")
    assert status == 1
    fix = fix_of(report, "the function refuses the WEBHOOK_SECRET given here")
    assert "--secret=WEBHOOK_SECRET" in fix and f"set-webhook --url {deployment.url}" in fix
    assert len(failures(report)) == 1, report


def test_a_function_that_cannot_be_reached_is_found(deployment: Deployment):
    from conftest import free_port

    gone = f"http://127.0.0.1:{free_port()}/"
    status, report = run_doctor(deployment, gone)
    assert status == 1
    assert "gcloud functions describe" in fix_of(report, f"the function at {gone} cannot be")


def test_a_missing_secret_is_found(deployment: Deployment):
    status, report = run_doctor(deployment, WEBHOOK_SECRET="")
    assert status == 1
    assert any(line.startswith("FAIL settings: WEBHOOK_SECRET is not set")
               for line in report.splitlines())
    assert "gcloud secrets versions access latest --secret=WEBHOOK_SECRET" in fix_of(
        report, "WEBHOOK_SECRET is not set here")
    assert "reachable" in report, "the other checks still run"


def test_pending_updates_and_a_recent_error_are_found(
    deployment: Deployment, fake_api: FakeBotApi
):
    fake_api.webhook.update({"pending_update_count": 512, "last_error_date": int(time.time()) - 120,
                             "last_error_message": "Wrong response from the webhook: "
                                                   "401 Unauthorized"})
    status, report = run_doctor(deployment)
    assert status == 1
    assert "fix the last error" in fix_of(report, "512 updates are waiting at Telegram")
    fix = fix_of(report, "last delivery error, 2 min ago: Wrong response from the webhook: 401")
    assert "not the function's WEBHOOK_SECRET" in fix
    assert f"set-webhook --url {deployment.url}" in fix
    fake_api.webhook.update({"last_error_date": int(time.time()) - 60,
                             "last_error_message": "Wrong response from the webhook: "
                                                   "503 Service Unavailable",
                             "pending_update_count": 3})
    status, report = run_doctor(deployment)
    assert status == 1 and "the function answers errors" in fix_of(report, "503 Service")
    fake_api.webhook["last_error_date"] = int(time.time()) - 2 * 86_400
    status, report = run_doctor(deployment)
    assert status == 0 and "the last delivery error was 48 h ago" in report, report


def test_wrong_update_kinds_and_missing_menus_are_found(
    deployment: Deployment, fake_api: FakeBotApi
):
    fake_api.webhook["allowed_updates"] = ["message"]
    fake_api.commands.pop("de")
    status, report = run_doctor(deployment)
    assert status == 1
    assert fix_of(report, "Telegram sends message; the bot needs exactly") == \
        f"python -m messagine set-webhook --url {deployment.url}"
    assert fix_of(report, "command menu is missing or out of date for: de") == \
        "python -m messagine set-commands"


def test_no_webhook_at_all_is_found(deployment: Deployment, fake_api: FakeBotApi):
    fake_api.webhook = {"url": "", "has_custom_certificate": False, "pending_update_count": 0}
    status, report = run_doctor(deployment)
    assert status == 1 and "set-webhook" in fix_of(report, "no webhook is set")


def drop_an_index(env: dict[str, str]) -> str:
    """Drop one index the bot needs; its name as the doctor reports it."""
    if env["STORAGE"] == "mongo":
        import pymongo

        with pymongo.MongoClient(env["MONGODB_URI"]) as client:
            client[env["MONGODB_DATABASE"]].message_links.drop_index("links_ttl")
        return "message_links.links_ttl"
    with sqlite3.connect(env["SQLITE_PATH"]) as conn:
        conn.execute("DROP INDEX lobby_by_language")
    return "lobby_by_language"


def test_a_missing_index_is_found(deployment: Deployment):
    if deployment.env["STORAGE"] == "firestore":
        pytest.skip("the Firestore emulator serves every query without composite indexes")
    name = drop_an_index(deployment.env)
    status, report = run_doctor(deployment)
    assert status == 1
    assert fix_of(report, name).startswith("run `python -m messagine init-db`")


STORE_DOWN = {"sqlite": {"SQLITE_PATH": "/nonexistent/messagine.sqlite3"},
              "mongo": {"MONGODB_URI": "mongodb://127.0.0.1:9/"},
              "firestore": {"FIRESTORE_EMULATOR_HOST": "127.0.0.1:9"}}


def test_a_store_that_is_down_is_found(deployment: Deployment):
    started = time.monotonic()
    status, report = run_doctor(deployment, **STORE_DOWN[deployment.env["STORAGE"]])
    assert status == 1
    problem = {"sqlite": "cannot be read", "mongo": "MongoDB cannot be reached",
               "firestore": "Firestore cannot be reached"}[deployment.env["STORAGE"]]
    assert fix_of(report, problem)
    assert "delivers to the function" in report, "Telegram is still checked"
    assert time.monotonic() - started < 30


def test_the_mongo_index_list_is_what_init_db_creates(mongo_uri: str):
    import pymongo

    from conftest import mongo_database_name
    from messagine.storage.mongo import MongoRepository

    name = mongo_database_name()
    repository = MongoRepository(mongo_uri, name)
    repository.init_schema()
    with pymongo.MongoClient(mongo_uri) as client:
        db = client[name]
        made = {c: {i for i in db[c].index_information() if i != "_id_"}
                for c in db.list_collection_names() if c != "meta"}
        ttl = {f"{c}.{i}" for c in made for i, spec in db[c].index_information().items()
               if "expireAfterSeconds" in spec}
        client.drop_database(name)
    repository.close()
    assert made == {c: set(names) for c, names in doctor.MONGO_INDEXES.items()}
    assert ttl == {f"{c}.{i}" for c, names in doctor.MONGO_INDEXES.items()
                   for i, is_ttl in names.items() if is_ttl}


@pytest.mark.slow
def test_the_command_line_exits_non_zero_on_a_problem(fake_api: FakeBotApi, tmp_path: Path):
    env = bot_env(fake_api, tmp_path / "db.sqlite3")
    clean = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_TOKEN", "STORAGE")}
    result = subprocess.run([sys.executable, "-m", "messagine", "doctor"],
                            cwd=ROOT, env={**clean, **env}, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL no webhook is set" in result.stdout
    assert "then run `python -m messagine init-db`" in result.stdout, "no database yet"
    assert fake_api.token not in result.stdout + result.stderr
    assert not fake_api.calls_of("setWebhook") and not fake_api.calls_of("setMyCommands"), \
        "the doctor only reads"


def test_each_firestore_probe_is_a_query_that_needs_its_index():
    # The emulator needs no composite index, so a missing one cannot be shown on it; what
    # can be checked is that each probe filters and orders on exactly its index's fields.
    import json

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from messagine.storage.setup_firestore import INDEXES_FILE

    client = firestore.Client(project="demo-x", credentials=AnonymousCredentials())
    for index in json.loads(INDEXES_FILE.read_text())["indexes"]:
        query = doctor._index_probe(client, index)._to_protobuf()
        *equal, last = index["fields"]
        filters = ([query.where.field_filter] if query.where.field_filter.field.field_path
                   else [f.field_filter for f in query.where.composite_filter.filters])
        assert [f.field.field_path for f in filters] == [f["fieldPath"] for f in equal]
        assert [f.op.name for f in filters] == [
            "ARRAY_CONTAINS" if "arrayConfig" in f else "EQUAL" for f in equal]
        (order,) = query.order_by
        assert order.field.field_path == last["fieldPath"]
        assert order.direction.name == last["order"]
        assert query.from_[0].collection_id == index["collectionGroup"]
