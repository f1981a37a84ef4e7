"""The doctor: ``python -m messagine doctor`` checks a deployment and explains what is wrong.

Run on a laptop or in Cloud Shell with the deployment's settings, it checks, in order: the
settings; the store (reachable, its indexes and TTL policies in place); Telegram's view of
the webhook (getWebhookInfo: the URL is the function's, the secret is set, the update
kinds are the bot's, max_connections, pending updates, the last delivery error); with
--url, the function itself (it refuses a request without the secret and accepts this
one); and the command menu in every catalog language. Each problem is said in plain words with the
command that fixes it; the exit status is 1 when anything is wrong. It only reads: it
writes to neither the store nor Telegram (the two requests to the function carry no
update), and its store checks use their own read-only
access (a read-only SQLite connection, a MongoDB client of its own, the Firestore
adapter's client for reads), never the repository's writing paths.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from messagine import routes
from messagine.catalog import Catalog
from messagine.pipeline import HANDLED_KINDS
from messagine.settings import Settings, SettingsError
from messagine.storage.registry import FirestoreOptions, MongoOptions, SqliteOptions, options
from messagine.storage.setup_firestore import INDEXES_FILE, gcloud_commands
from messagine.telegram import Telegram, TelegramError

PENDING_LIMIT = 100
"""More updates than this waiting at Telegram is a problem (the alert's threshold too)."""
RECENT_ERROR_S = 3600
"""A delivery error younger than this is a problem; an older one is history."""
RECOMMENDED_CONNECTIONS = 40

# Every MongoDB index init-db creates, by collection; True marks a TTL index.
# tests/test_doctor.py checks this against what init-db really creates.
MONGO_INDEXES: dict[str, dict[str, bool]] = {
    "users": {"users_by_recent_update": False, "users_due_for_nudge": False,
              "users_by_age_answer": False, "users_by_last_seen": False,
              "users_due_for_notice": False, "users_noticed": False},
    "lobby": {"lobby_by_language": False, "lobby_by_since": False},
    "chats": {"chats_by_user": False, "chats_by_end": False, "chats_by_closing_update": False,
              "chats_ttl": True, "chats_by_start": False},
    "exclusions": {"exclusions_by_other": False, "exclusions_by_user": False,
                   "exclusions_by_time": False, "exclusions_by_key": False},
    "message_links": {"links_by_copy": False, "links_ttl": True, "links_by_chat": False,
                      "links_by_sender": False},
    "reports": {"reports_by_time": False, "reports_by_reporter": False,
                "reports_by_reported": False, "reports_by_key": False},
    "claimed_updates": {"claims_ttl": True},
    "albums": {"albums_ttl": True},
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what was found, in plain words, and the fix when it is wrong."""

    ok: bool
    what: str
    fix: str | None = None


def examine(env: Mapping[str, str], function_url: str | None = None) -> list[Finding]:
    """Every check against the deployment ``env`` describes; stops early only without settings."""
    findings: list[Finding] = []
    try:
        settings = Settings.from_env(env, require_webhook_secret=True)
        findings.append(Finding(True, f"settings are valid (STORAGE={settings.storage})"))
    except SettingsError as error:
        findings.append(Finding(False, "settings: " + "; ".join(error.problems),
                                "set the variables named above as the deployment has them "
                                "(README.md, Configuration; secrets: `gcloud secrets versions "
                                "access latest --secret=NAME`)"))
        try:  # without the webhook secret the other checks still make sense
            settings = Settings.from_env(env)
        except SettingsError:
            return findings
    findings.extend(examine_store(settings))
    from messagine.runtime import build_runtime  # noqa: PLC0415 - after the settings check

    runtime = build_runtime(settings)
    findings.extend(examine_webhook(runtime.telegram, settings, function_url))
    if function_url is not None:
        findings.extend(examine_function(function_url, settings))
    findings.extend(examine_menus(runtime.telegram, runtime.catalog))
    return findings


def run(env: Mapping[str, str], function_url: str | None, out: TextIO = sys.stdout) -> int:
    """Print every finding, each problem with its fix; 0 when all is well, else 1."""
    findings = examine(env, function_url)
    for finding in findings:
        out.write(f"{'ok  ' if finding.ok else 'FAIL'} {finding.what}\n")
        if finding.fix:
            out.write(f"     fix: {finding.fix}\n")
    problems = sum(not f.ok for f in findings)
    out.write("all checks passed\n" if not problems else
              f"{problems} problem{'s' if problems > 1 else ''} found\n")
    return 1 if problems else 0


# -- the store ---------------------------------------------------------------------------

def examine_store(settings: Settings) -> list[Finding]:
    """The store: reachable, with its indexes and TTL policies."""
    checks: dict[str, Callable[[Settings], list[Finding]]] = {
        "sqlite": _sqlite, "mongo": _mongo, "firestore": _firestore}
    return checks[settings.storage](settings)


_INIT_DB = "run `python -m messagine init-db` with these settings (it creates what is missing)"


def _sqlite(settings: Settings) -> list[Finding]:
    path = Path(options(settings, SqliteOptions).path)
    try:
        live = _sqlite_indexes(path)
    except sqlite3.Error as error:
        return [Finding(False, f"the SQLite database {path} cannot be read ({error})",
                        f"check the path SQLITE_PATH, then {_INIT_DB}")]
    with tempfile.TemporaryDirectory() as scratch:
        from messagine.storage.sqlite import SqliteRepository  # noqa: PLC0415 - lazy driver

        reference = SqliteRepository(Path(scratch) / "reference.sqlite3")
        reference.init_schema()
        reference.close()
        expected = _sqlite_indexes(Path(scratch) / "reference.sqlite3")
    findings = [Finding(True, f"the SQLite database {path} is reachable (read-only check)")]
    missing = sorted(expected - live)
    findings.append(Finding(False, f"SQLite indexes missing: {', '.join(missing)}", _INIT_DB)
                    if missing else Finding(True, f"all {len(expected)} SQLite indexes exist "
                                            "(no TTL here: expired rows are purged hourly)"))
    return findings


def _sqlite_indexes(path: Path) -> set[str]:
    if not path.exists():
        raise sqlite3.OperationalError("no such file")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                            "AND name NOT LIKE 'sqlite_autoindex_%'").fetchall()
    return {str(name) for (name,) in rows}


def _mongo(settings: Settings) -> list[Finding]:
    import pymongo  # noqa: PLC0415 - only this store needs the driver
    from pymongo.errors import PyMongoError  # noqa: PLC0415

    mongo = options(settings, MongoOptions)
    client: Any = pymongo.MongoClient(mongo.uri, appname="messagine-doctor",
                                      serverSelectionTimeoutMS=4_000, connectTimeoutMS=3_000)
    try:
        db = client[mongo.database]
        try:
            client.admin.command("ping")
            live = {name: db[name].index_information() for name in MONGO_INDEXES}
        except PyMongoError as error:
            return [Finding(False, f"MongoDB cannot be reached ({type(error).__name__})",
                            "check the cluster is running, its network access list allows "
                            "this machine (and the function: 0.0.0.0/0 or the function's "
                            "egress), and MONGODB_URI's user and password")]
    finally:
        client.close()
    findings = [Finding(True, f"MongoDB is reachable (database {mongo.database})")]
    missing = [f"{collection}.{name}" for collection, names in MONGO_INDEXES.items()
               for name in names if name not in live[collection]]
    not_ttl = [f"{collection}.{name}" for collection, names in MONGO_INDEXES.items()
               for name, ttl in names.items()
               if ttl and name in live[collection]
               and "expireAfterSeconds" not in live[collection][name]]
    if missing:
        findings.append(Finding(False, f"MongoDB indexes missing: {', '.join(missing)}", _INIT_DB))
    if not_ttl:
        findings.append(Finding(False, f"MongoDB indexes without their TTL: {', '.join(not_ttl)}",
                                "drop these indexes, then " + _INIT_DB))
    if not missing and not not_ttl:
        count = sum(len(names) for names in MONGO_INDEXES.values())
        findings.append(Finding(True, f"all {count} MongoDB indexes exist, the 3 TTL ones "
                                "with their expiry"))
    return findings


def _firestore(settings: Settings) -> list[Finding]:
    from google.api_core import exceptions  # noqa: PLC0415 - only this store needs it

    from messagine.storage import open_repository  # noqa: PLC0415

    client: Any = open_repository(settings).client  # type: ignore[attr-defined]
    try:
        client.collection("users").document("0").get(timeout=10, retry=None)
    except exceptions.GoogleAPIError as error:
        return [Finding(False, f"Firestore cannot be reached ({type(error).__name__})",
                        "check the database exists (`gcloud firestore databases list`), "
                        "FIRESTORE_PROJECT / FIRESTORE_DATABASE, and that this account may "
                        "read it (roles/datastore.user)")]
    findings = [Finding(True, f"Firestore is reachable (project {client.project})")]
    spec = json.loads(INDEXES_FILE.read_text())
    commands = gcloud_commands(client.project)
    missing = []
    for position, index in enumerate(spec["indexes"]):
        try:
            _index_probe(client, index).get(timeout=10, retry=None)
        except exceptions.FailedPrecondition:  # "The query requires an index"
            missing.append(position)
    for position in missing:
        index = spec["indexes"][position]
        fields = ", ".join(f["fieldPath"] for f in index["fields"])
        findings.append(Finding(False, f"Firestore index missing: {index['collectionGroup']} "
                                f"({fields})", commands[position]))
    if not missing:
        findings.append(Finding(True, f"the {len(spec['indexes'])} Firestore composite indexes "
                                "answer their queries"))
    findings.append(_firestore_ttl(settings, client.project, spec))
    return findings


def _index_probe(client: Any, index: Mapping[str, Any]) -> Any:
    """A query that needs ``index``: equality on its first fields, ordered by the last."""
    from google.cloud.firestore_v1.base_query import FieldFilter  # noqa: PLC0415

    query = client.collection(index["collectionGroup"])
    *equal, last = index["fields"]
    for field in equal:
        operator = "array_contains" if "arrayConfig" in field else "=="
        query = query.where(filter=FieldFilter(field["fieldPath"], operator, 0))
    direction = "DESCENDING" if last.get("order") == "DESCENDING" else "ASCENDING"
    return query.order_by(last["fieldPath"], direction=direction).limit(1)


def _firestore_ttl(settings: Settings, project: str, spec: Mapping[str, Any]) -> Finding:
    ttl_fields = [o for o in spec.get("fieldOverrides", []) if o.get("ttl")]
    names = ", ".join(f"{o['collectionGroup']}.{o['fieldPath']}" for o in ttl_fields)
    firestore_options = options(settings, FirestoreOptions)
    if firestore_options.emulator_host is not None:
        return Finding(True, f"TTL policies ({names}): the emulator has none to check")
    try:
        from google.cloud import firestore_admin_v1  # noqa: PLC0415

        admin: Any = firestore_admin_v1.FirestoreAdminClient()
        inactive = []
        for override in ttl_fields:
            field = admin.get_field(name=(
                f"projects/{project}/databases/{firestore_options.database}/collectionGroups/"
                f"{override['collectionGroup']}/fields/{override['fieldPath']}"), timeout=10)
            if field.ttl_config.state.name != "ACTIVE":
                inactive.append(f"{override['collectionGroup']}.{override['fieldPath']}")
    except Exception as error:  # noqa: BLE001 - a permission or API error: say so, go on
        return Finding(False, f"TTL policies could not be read ({type(error).__name__})",
                       "grant this account roles/datastore.indexAdmin to check them, or look "
                       "in Cloud Console -> Firestore -> Time-to-live")
    if inactive:
        return Finding(False, f"Firestore TTL policies not active: {', '.join(inactive)}",
                       f"`python -m messagine.storage.setup_firestore --project={project}` "
                       "prints the commands (a new policy takes minutes to become active)")
    return Finding(True, f"Firestore TTL policies are active ({names})")


# -- Telegram ----------------------------------------------------------------------------

def examine_webhook(telegram: Telegram, settings: Settings, function_url: str | None,
                    now: Callable[[], float] = time.time) -> list[Finding]:
    """Telegram's view of the webhook (getWebhookInfo) against what the bot needs."""
    set_webhook = ("python -m messagine set-webhook --url "
                   f"{function_url or 'https://YOUR-FUNCTION-URL'}")
    try:
        info = telegram.webhook_info()
    except TelegramError as error:
        return [_telegram_down(error)]
    findings: list[Finding] = []
    url = str(info.get("url") or "")
    if not url:
        findings.append(Finding(False, "no webhook is set: Telegram delivers the bot's updates "
                                "to nobody (or a `poll` is running)", set_webhook))
    elif function_url is not None and url.rstrip("/") != function_url.rstrip("/"):
        findings.append(Finding(False, f"Telegram delivers to {url}, not to the function "
                                f"({function_url})", set_webhook))
    elif function_url is None:
        findings.append(Finding(True, f"Telegram delivers to {url} (give --url to check it is "
                                "the function's)"))
    else:
        findings.append(Finding(True, f"Telegram delivers to the function ({url})"))
    findings.append(
        Finding(True, "WEBHOOK_SECRET is set here (Telegram does not show its copy; a "
                "mismatch shows as 401 errors below)")
        if settings.webhook_secret is not None else
        Finding(False, "WEBHOOK_SECRET is not set here, so this check cannot compare it and "
                "set-webhook cannot give it to Telegram",
                "export WEBHOOK_SECRET=$(gcloud secrets versions access latest "
                "--secret=WEBHOOK_SECRET), then " + set_webhook))
    if url:
        findings.extend(_delivery(info, set_webhook, now()))
    return findings


def _delivery(info: Mapping[str, Any], set_webhook: str, now: float) -> Iterator[Finding]:
    allowed = info.get("allowed_updates")
    if allowed is None or set(allowed) != set(HANDLED_KINDS):
        shown = ", ".join(allowed) if allowed else "its default kinds (no allowed_updates set)"
        yield Finding(False, f"Telegram sends {shown}; the bot needs exactly "
                      f"{', '.join(HANDLED_KINDS)}", set_webhook)
    else:
        yield Finding(True, f"update kinds: {', '.join(allowed)}")
    connections = info.get("max_connections") or 40  # Telegram's default
    yield Finding(True, f"max_connections is {connections}" + (
        "" if int(connections) >= RECOMMENDED_CONNECTIONS else
        f" (below {RECOMMENDED_CONNECTIONS}: a busy bot queues at Telegram; "
        "docs/scaling.md)"))
    pending = int(info.get("pending_update_count", 0))
    yield (Finding(True, f"{pending} updates waiting at Telegram") if pending <= PENDING_LIMIT
           else Finding(False, f"{pending} updates are waiting at Telegram: the webhook is "
                        "not keeping up or fails (see the last error)",
                        "fix the last error below; if there is none, look at the function's "
                        "503s and latency on the dashboard (docs/operations.md)"))
    error_date = info.get("last_error_date")
    if error_date is None:
        yield Finding(True, "Telegram reports no delivery error")
        return
    age = max(0, int(now - float(error_date)))
    message = str(info.get("last_error_message") or "no message")
    when = f"{age // 60} min ago" if age < 3 * 3600 else f"{age // 3600} h ago"
    if age > RECENT_ERROR_S:
        yield Finding(True, f"the last delivery error was {when}: {message}")
        return
    yield Finding(False, f"Telegram's last delivery error, {when}: {message}",
                  _fix_for(message, set_webhook))


def _fix_for(message: str, set_webhook: str) -> str:
    """The fix for one of Telegram's delivery errors, by what it says."""
    if "401" in message or "Unauthorized" in message:
        return ("the secret Telegram sends is not the function's WEBHOOK_SECRET: with this "
                f"deployment's secret, {set_webhook}")
    if "404" in message or "Not Found" in message:
        return f"the URL has no function behind it: {set_webhook} with the function's URL"
    if any(code in message for code in ("500", "502", "503", "504")):
        return ("the function answers errors: its logs (severity>=ERROR) and the 503 chart "
                "say why (docs/operations.md); Telegram re-delivers once it answers 200")
    return ("Telegram cannot reach the function: check the URL, that it allows "
            f"unauthenticated calls, and its certificate; then {set_webhook}")


def examine_function(function_url: str, settings: Settings) -> list[Finding]:
    """The function itself: it refuses a request without the secret and accepts ours.

    Both requests carry an empty JSON object, which the function answers without any work
    (no update id: ignored); the one without the secret leaves a WARNING line in its log.
    """
    import requests  # noqa: PLC0415 - only this check calls the function

    from messagine.webhook import SECRET_HEADER  # noqa: PLC0415

    try:
        anonymous = requests.post(function_url, json={}, timeout=30).status_code
        signed = None if settings.webhook_secret is None else requests.post(
            function_url, json={}, timeout=30,
            headers={SECRET_HEADER: settings.webhook_secret.reveal()}).status_code
    except requests.RequestException as error:
        return [Finding(False, f"the function at {function_url} cannot be reached "
                        f"({type(error).__name__})", "check --url: `gcloud functions describe "
                        "messagine --gen2 --region=REGION --format='value(serviceConfig.uri)'`")]
    findings = []
    if anonymous == 500:
        findings.append(Finding(False, "the function answers 500: it has no WEBHOOK_SECRET (or "
                                "another setting is invalid; its log says which)",
                                "deploy with the secret: the build's --set-secrets gives it"))
    elif anonymous != 401:
        findings.append(Finding(False, f"the function answers {anonymous} to a request "
                                "without the secret token, not 401", "check --url is the "
                                "webhook function's, then redeploy it with the build"))
    else:
        findings.append(Finding(True, "the function refuses requests without the secret"))
    if signed == 401:
        findings.append(Finding(False, "the function refuses the WEBHOOK_SECRET given here: it "
                                "has another one, and Telegram may too", "use the deployment's "
                                "secret (gcloud secrets versions access latest "
                                "--secret=WEBHOOK_SECRET), then python -m messagine set-webhook "
                                f"--url {function_url}"))
    elif signed is not None and signed != 200:
        findings.append(Finding(False, f"the function answers {signed} with the secret",
                                "its log (severity>=WARNING) says why"))
    elif signed == 200:
        findings.append(Finding(True, "the function accepts this WEBHOOK_SECRET"))
    return findings


def examine_menus(telegram: Telegram, catalog: Catalog) -> list[Finding]:
    """The command menu (getMyCommands) in every catalog language, as set-commands sets it."""
    languages: list[str | None] = [None, *(c for c in catalog.languages() if c != "en")]
    wrong = []
    for language in languages:
        expected = routes.menu(catalog.for_language(language or "en"))
        try:
            shown = telegram.get_commands(language)
        except TelegramError as error:
            return [_telegram_down(error)]
        if shown != expected:
            wrong.append(language or "default")
    if wrong:
        return [Finding(False, f"the command menu is missing or out of date for: "
                        f"{', '.join(wrong)}", "python -m messagine set-commands")]
    return [Finding(True, f"the command menu is set in all {len(languages)} languages")]


def _telegram_down(error: TelegramError) -> Finding:
    if error.code in (401, 404):
        return Finding(False, f"Telegram refused the token ({error.code} on {error.method})",
                       "TELEGRAM_TOKEN must be the bot's current token (@BotFather -> API "
                       "Token); update the secret and redeploy")
    return Finding(False, f"Telegram could not be asked ({error.method}: {error.code} "
                   f"{error.description})", "check the network, then try again")
