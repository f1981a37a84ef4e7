"""The local sandbox: try the bot in a browser, with no bot token and no network.

It starts, on 127.0.0.1 only, the fake Bot API, the real bot (main.py's ``webhook`` entry
point in functions-framework's Flask app, so updates take the production code path, on an
SQLite file) and a web page where several simulated Telegram users chat with the bot side
by side. A side panel shows the Bot API calls and the log line of every update.

Each run starts from a fresh SQLite file: the fake Bot API keeps its chats in memory, so a
store kept from an earlier run would hold chats, message links and update ids (the fake
counts them from 1 again, and the bot would drop its updates as re-deliveries) that belong
to messages which no longer exist.
"""

from __future__ import annotations

import collections
import logging
import mimetypes
import os
import re
import secrets
import threading
import webbrowser
from pathlib import Path
from typing import Any

import flask

from messagine.dev.fake_bot_api import FakeBotApi, FakeUser

STATIC = Path(__file__).parent / "sandbox_static"
MAIN = Path(__file__).resolve().parent.parent.parent / "main.py"
SAMPLES = ("photo", "sticker", "voice", "location", "contact")
NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank")


class _Recorder(logging.Handler):
    """Keeps the last log lines for the side panel."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=300)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


class Sandbox:
    """The fake Bot API, the bot behind its webhook, and the users of the page."""

    def __init__(self, database: Path) -> None:
        for leftover in (database, *(database.with_name(database.name + suffix)
                                     for suffix in ("-wal", "-shm", "-journal"))):
            leftover.unlink(missing_ok=True)
        self.api = FakeBotApi().start()
        self.secret = secrets.token_urlsafe(16)
        os.environ.update({
            "TELEGRAM_TOKEN": self.api.token, "TELEGRAM_API_URL": self.api.url,
            "WEBHOOK_SECRET": self.secret, "STORAGE": "sqlite", "SQLITE_PATH": str(database),
            "LOG_FORMAT": "text",
        })
        for name in ("MONGODB_URI", "K_SERVICE", "MIXPANEL_TOKEN", "ALBUM_QUEUE"):
            os.environ.pop(name, None)
        import functions_framework  # noqa: PLC0415 - the sandbox only

        self.bot = functions_framework.create_app(target="webhook", source=str(MAIN))
        self.bot_client = self.bot.test_client()
        self.users: dict[int, FakeUser] = {}
        self.lock = threading.Lock()
        self.log = _Recorder()
        self.log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                                "%H:%M:%S"))
        logging.getLogger("messagine").addHandler(self.log)
        for _ in range(2):
            self.add_user()

    def add_user(self) -> FakeUser:
        """A new simulated Telegram user with a private chat with the bot."""
        with self.lock:
            number = len(self.users)
            name = NAMES[number % len(NAMES)] + ("" if number < len(NAMES) else str(number))
            user = self.api.user(10_001 + number, name, language_code="en")
            self.users[user.id] = user
            return user

    def deliver(self, update: dict[str, Any]) -> int:
        """Post an update to the bot's webhook, as Telegram would; returns the HTTP status."""
        with self.lock:  # Telegram delivers one update at a time per chat; one at a time here
            response = self.bot_client.post(
                "/", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": self.secret})
            return int(response.status_code)

    def state(self) -> dict[str, Any]:
        """Everything the page shows (a file the bot sent as a link, not its bytes)."""
        users = [{"id": u.id, "name": u.profile["first_name"],
                  "messages": [_linked(u.id, m) for m in self.api.messages(u.id)]}
                 for u in self.users.values()]
        calls = [{"method": c.method, "chat_id": c.chat_id, "status": c.status}
                 for c in self.api.calls[-200:]]
        return {"users": users, "bot_id": self.api.bot_user["id"], "calls": calls,
                "log": list(self.log.lines)}


# A link ends before trailing punctuation, as in Telegram's own parsing.
_LINKS = re.compile(r"(?P<url>(?:https?://|\bt\.me/)\S+?)(?=[.,;:!?)]*(?:\s|$))"
                    r"|(?<!\w)(?P<mention>@\w{5,32})")


def _entities(text: str) -> list[dict[str, Any]]:
    """The url and mention entities Telegram would find in a typed text.

    Offsets count UTF-16 code units, as Telegram's do.
    """

    def utf16(end: int) -> int:
        return len(text[:end].encode("utf-16-le")) // 2

    return [{"type": str(found.lastgroup), "offset": utf16(found.start()),
             "length": utf16(found.end()) - utf16(found.start())}
            for found in _LINKS.finditer(text)]


def _linked(chat_id: int, message: dict[str, Any]) -> dict[str, Any]:
    document = message.get("document")
    if isinstance(document, dict) and document.pop("content", None) is not None:
        document["url"] = f"/api/files/{chat_id}/{message['message_id']}"
    return message


def create_app(sandbox: Sandbox) -> flask.Flask:
    """The page and the small JSON API its script uses."""
    app = flask.Flask(__name__, static_folder=str(STATIC), static_url_path="/static")

    @app.get("/")
    def index() -> flask.Response:
        return flask.send_from_directory(STATIC, "index.html")

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return sandbox.state()

    @app.get("/api/files/<int:chat_id>/<int:message_id>")
    def file(chat_id: int, message_id: int) -> flask.Response:
        found = sandbox.api.document(chat_id, message_id)
        if found is None:
            flask.abort(404)
        name, content = found
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = flask.Response(content, mimetype=mimetype)
        response.headers["Content-Disposition"] = f'inline; filename="{name}"'
        return response

    @app.post("/api/users")
    def add_user() -> dict[str, Any]:
        return {"id": sandbox.add_user().id}

    @app.get("/api/commands")
    def commands() -> dict[str, Any]:
        from messagine.catalog import Catalog  # noqa: PLC0415
        from messagine.routes import menu  # noqa: PLC0415

        texts = Catalog().for_language("en")
        return {"commands": [{"command": command, "description": description}
                             for command, description in menu(texts)]}

    @app.post("/api/act")
    def act() -> tuple[dict[str, Any], int]:
        body = flask.request.get_json(force=True, silent=True) or {}
        user = sandbox.users.get(int(body.get("user", 0)))
        if user is None:
            return {"error": "no such user"}, 404
        kind = body.get("kind")
        reply_to = body.get("reply_to")
        if kind == "text":
            text = str(body.get("text", "")).strip()
            if not text:
                return {"error": "empty message"}, 400
            update = (user.command(text[1:], reply_to) if text.startswith("/")
                      else user.text(text, reply_to, _entities(text)))
        elif kind in SAMPLES:
            update = user.media(kind, reply_to=reply_to)
        elif kind == "album":  # one update per item, as Telegram sends an album
            updates = user.album("photo", 3, caption="An album")
            return {"status": max(sandbox.deliver(u) for u in updates)}, 200
        elif kind == "react":
            emoji = body.get("emoji")
            update = user.react(int(body["message_id"]), str(emoji) if emoji else None,
                                str(body["before"]) if body.get("before") else None)
        elif kind == "edit":
            update = user.edit(int(body["message_id"]), text=str(body.get("text", "")))
        elif kind == "press":
            update = user.press(int(body["message_id"]), str(body["data"]))
        else:
            return {"error": f"unknown action {kind!r}"}, 400
        return {"status": sandbox.deliver(update)}, 200

    return app


def run(port: int = 8080, database: Path = Path("sandbox.sqlite3"),
        open_browser: bool = True) -> int:
    """Start the sandbox and serve the page until interrupted."""
    sandbox = Sandbox(database)
    url = f"http://127.0.0.1:{port}/"
    print(f"Messagine sandbox: open {url} (Ctrl+C to stop)", flush=True)  # noqa: T201
    if open_browser:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    create_app(sandbox).run(host="127.0.0.1", port=port, threaded=True)
    sandbox.api.stop()
    return 0

