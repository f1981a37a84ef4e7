"""The command line: ``python -m messagine [command]``.

sandbox (the default without TELEGRAM_TOKEN: the bot in a browser page, no network), poll
(the default with a token: long polling), serve (the webhook on a local port),
set-commands, set-webhook, delete-webhook, webhook-info and init-db. Each command reads the
same settings as the function and fails with a clear message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from messagine import routes
from messagine.pipeline import HANDLED_KINDS
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings, SettingsError
from messagine.telegram import TelegramError

log = logging.getLogger("messagine.cli")

# Telegram holds at most this many webhook connections open to us at once; each is one
# concurrent request, so it bounds the instances a burst can start (see docs/deploy.md).
WEBHOOK_MAX_CONNECTIONS = 40
PURGE_EVERY_S = 3600.0
POLLING_PURGE_BUDGET_S = 10.0
"""Polling stops fetching updates while it purges: at most this long once an hour."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m messagine", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    sandbox = commands.add_parser(
        "sandbox", help="try the bot in the browser: no token, no network (the default "
        "when TELEGRAM_TOKEN is not set)")
    sandbox.add_argument("--port", type=int, default=8080)
    sandbox.add_argument("--no-browser", action="store_true", help="do not open a browser")
    poll = commands.add_parser("poll", help="run the bot with long polling (no webhook)")
    poll.add_argument("--max-batches", type=int, default=None, help=argparse.SUPPRESS)
    serve = commands.add_parser("serve", help="serve the webhook on a local port")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    commands.add_parser("set-commands", help="set the command menu for every language")
    hook = commands.add_parser("set-webhook", help="point Telegram at the deployed function")
    hook.add_argument("--url", required=True, help="the function's public https URL")
    hook.add_argument("--max-connections", type=int, default=WEBHOOK_MAX_CONNECTIONS,
                      choices=range(1, 101), metavar="1-100",
                      help="requests Telegram keeps in flight at once (docs/scaling.md)")
    commands.add_parser("delete-webhook", help="stop webhook delivery")
    commands.add_parser("webhook-info", help="print Telegram's view of the webhook")
    commands.add_parser("init-db", help="create the storage schema and indexes")
    doctor = commands.add_parser(
        "doctor", help="check the deployment (settings, store, webhook, menus) and explain "
        "each problem with its fix; exit status 1 when something is wrong")
    doctor.add_argument("--url", help="the function's https URL, to check Telegram uses it")
    args = parser.parse_args(argv)
    if args.command is None:
        args.command = "poll" if os.environ.get("TELEGRAM_TOKEN") else "sandbox"
        args.port, args.no_browser, args.max_batches = 8080, False, None
    if args.command == "sandbox":
        from messagine.dev import sandbox as local_sandbox  # noqa: PLC0415 - never deployed

        return local_sandbox.run(args.port, open_browser=not args.no_browser)
    if args.command == "doctor":
        from messagine import doctor as checks  # noqa: PLC0415 - only this command needs it

        return checks.run(os.environ, args.url)

    try:
        settings = Settings.from_env(require_webhook_secret=args.command == "set-webhook")
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runtime = build_runtime(settings)
    try:
        if args.command == "poll":
            return run_polling(runtime, args.max_batches)
        if args.command == "serve":
            return serve_webhook(args.host, args.port)
        if args.command == "set-commands":
            return set_commands(runtime)
        if args.command == "set-webhook":
            return set_webhook(runtime, args.url, args.max_connections)
        if args.command == "delete-webhook":
            runtime.telegram.delete_webhook()
            print("webhook deleted")
            return 0
        if args.command == "webhook-info":
            print(json.dumps(runtime.telegram.webhook_info(), indent=2, sort_keys=True))
            return 0
        if args.command == "init-db":
            runtime.repository.init_schema()
            print(f"{runtime.repository.backend} storage ready")
            return 0
    except TelegramError as error:
        print(f"error: Telegram refused {error.method}: {error.code} {error.description}",
              file=sys.stderr)
        return 1
    return 2


def set_commands(runtime: Runtime) -> int:
    """Set the command menu: the default (English) and one per other catalog language."""
    catalog = runtime.catalog
    languages: list[str | None] = [None, *(c for c in catalog.languages() if c != "en")]
    for language in languages:
        texts = catalog.for_language(language or "en")
        runtime.telegram.set_commands(routes.menu(texts), language)
        print(f"command menu set for {language or 'the default language'}")
    return 0


def set_webhook(runtime: Runtime, url: str,
                max_connections: int = WEBHOOK_MAX_CONNECTIONS) -> int:
    """Register the webhook with the secret token and the update kinds the bot handles."""
    if not url.startswith("https://"):
        print("error: --url must be the function's https:// URL", file=sys.stderr)
        return 2
    secret = runtime.settings.webhook_secret
    assert secret is not None  # noqa: S101 - required by the settings for this command
    runtime.telegram.set_webhook(url, secret.reveal(), HANDLED_KINDS, max_connections)
    print(f"webhook set to {url} for {', '.join(HANDLED_KINDS)}")
    return 0


def run_polling(runtime: Runtime, max_batches: int | None = None) -> int:
    """Fetch updates with getUpdates and run each through the same pipeline as the webhook."""
    runtime.telegram.delete_webhook()
    print("polling for updates; press Ctrl+C to stop", file=sys.stderr)
    offset = 0
    batches = 0
    next_purge = 0.0
    try:
        while max_batches is None or batches < max_batches:
            batches += 1
            if time.monotonic() >= next_purge:  # no scheduler runs the job when polling
                next_purge = time.monotonic() + PURGE_EVERY_S
                purge_expired(runtime)
            try:
                updates = runtime.telegram.get_updates(offset, 25, HANDLED_KINDS)
            except TelegramError as error:
                log.warning("getUpdates failed (%s); retrying in 3 s", error.code)
                time.sleep(3)
                continue
            for update in updates:
                while runtime.pipeline.process(update).status >= 500:
                    time.sleep(2)  # as Telegram would: try the same update again later
                offset = max(offset, int(update.get("update_id", 0)) + 1)
    except KeyboardInterrupt:
        pass
    return 0


def purge_expired(runtime: Runtime) -> dict[str, int]:
    """Delete expired records within POLLING_PURGE_BUDGET_S; the counts ({} on failure)."""
    try:
        purged = runtime.reminders.purge(POLLING_PURGE_BUDGET_S)
    except Exception as error:  # noqa: BLE001 - polling goes on; the next hour retries
        log.warning("expired records not purged: %s", type(error).__name__)
        return {}
    if any(purged.values()):
        log.info("purged expired records: %s", purged)
    return purged


def serve_webhook(host: str, port: int) -> int:
    """Serve main.py's ``webhook`` entry point locally, as functions-framework does."""
    from pathlib import Path  # noqa: PLC0415 - only this command needs the server

    import functions_framework  # noqa: PLC0415

    # functions-framework sets FUNCTION_TARGET, which means "Google Cloud" to the log
    # settings; on one's own machine readable lines are the better default.
    os.environ.setdefault("LOG_FORMAT", "text")
    source = Path(__file__).resolve().parent.parent / "main.py"
    app = functions_framework.create_app(target="webhook", source=str(source))
    app.run(host=host, port=port)
    return 0
