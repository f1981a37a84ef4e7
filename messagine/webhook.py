"""The HTTP face of the bot: the checks every webhook request passes before any work.

In this order, before any storage or Telegram call: POST only (405), at most 1 MiB (413),
the ``X-Telegram-Bot-Api-Secret-Token`` header equal to WEBHOOK_SECRET in constant time
(401), a JSON object (400). Then the pipeline decides 200 or 503. A request marked
``X-Messagine-Task: album-flush`` (an album's Cloud Task, with the same secret) flushes
that album instead (messagine.schedule).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING

from messagine import logs
from messagine.runtime import LazyRuntime, Runtime
from messagine.schedule import (
    ALBUM_TASK,
    RETRY_COUNT_HEADER,
    TASK_HEADER,
    flush_request,
    last_attempt,
)
from messagine.settings import SettingsError

if TYPE_CHECKING:
    import flask

log = logging.getLogger("messagine.webhook")

MAX_BODY_BYTES = 1024 * 1024
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name

_runtime = LazyRuntime(require_webhook_secret=True)

Response = tuple[str, int, dict[str, str]]


def handle(request: flask.Request, runtime: Runtime | None = None) -> Response:
    """Answer one webhook request (the ``webhook`` entry point of main.py)."""
    if request.method != "POST":
        log.warning("refused %s request: only POST is accepted", request.method)
        return _reply(405, "method not allowed", {"Allow": "POST"})
    if (request.content_length or 0) > MAX_BODY_BYTES:
        log.warning("refused request of %s bytes: over the 1 MiB limit", request.content_length)
        return _reply(413, "payload too large")
    try:
        runtime = runtime or _runtime.get()
    except SettingsError as error:
        log.error(  # noqa: TRY400 - the problems say it all; a traceback would not help
            "configuration invalid, answering 500: %s", "; ".join(error.problems))
        return _reply(500, "bot not configured")
    expected = runtime.settings.webhook_secret
    given = request.headers.get(SECRET_HEADER, "")
    if expected is None or not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                   expected.reveal().encode()):
        log.warning("refused request with a missing or wrong secret token")
        return _reply(401, "unauthorized")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        log.warning("refused request over the 1 MiB limit (no or wrong Content-Length)")
        return _reply(413, "payload too large")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        log.warning("refused request whose body is not JSON (%s bytes)", len(body))
        return _reply(400, "body is not JSON")
    except RecursionError:  # authentic, and never processable: a retry would stall the chat
        log.warning("ignored an update nested too deeply to decode (%s bytes)", len(body))
        return _reply(200, "ok")
    if not isinstance(payload, dict):
        log.warning("refused request whose JSON is a %s, not an object", type(payload).__name__)
        return _reply(400, "body is not a JSON object")
    if request.headers.get(TASK_HEADER) == ALBUM_TASK:
        return _flush_album(runtime, payload, request.headers.get(RETRY_COUNT_HEADER))
    token = logs.set_trace(logs.trace_from_header(
        request.headers.get("X-Cloud-Trace-Context"), runtime.settings.project_id))
    try:
        result = runtime.pipeline.process(payload)
    finally:
        logs.reset_trace(token)
    return _reply(result.status, "ok" if result.status == 200 else "retry later")


def _flush_album(runtime: Runtime, payload: dict[str, object],
                 retry_count: str | None) -> Response:
    """An album's flush, which its Cloud Task asks for; 503 makes the queue retry it."""
    named = flush_request(payload)
    if named is None:
        log.warning("refused an album flush that names no album batch")
        return _reply(400, "not an album flush")
    flushed = runtime.albums.flush(*named, last_attempt=last_attempt(retry_count))
    return _reply(503 if flushed.retry else 200, "retry later" if flushed.retry else "ok")


def _reply(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    return text, status, {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
