"""The HTTP face of the scheduled reminders job (the ``reminders`` entry point of main.py).

Not public: IAM lets only Cloud Scheduler's service account call it, and the function
also refuses any request without the header ``X-Job-Secret`` equal to JOB_SECRET (401),
so a deploy that was left open by mistake is still closed.

Each run also asks Telegram for the webhook's state (getWebhookInfo) and logs its pending
update count and last error on one line (``webhook_pending_updates``,
``webhook_last_error_age_s``, ``webhook_last_error``), so that a queue growing at Telegram
shows on the dashboard and can raise an alert, even when no update reaches the function.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import TYPE_CHECKING

from messagine.runtime import LazyRuntime, Runtime
from messagine.settings import SettingsError
from messagine.storage.port import StorageUnavailable
from messagine.telegram import TelegramError

if TYPE_CHECKING:
    import flask

log = logging.getLogger("messagine.job")

JOB_SECRET_HEADER = "X-Job-Secret"  # noqa: S105 - a header name

_runtime = LazyRuntime(require_webhook_secret=False)

Response = tuple[str, int, dict[str, str]]


def handle(request: flask.Request, runtime: Runtime | None = None) -> Response:
    """Run the reminders job once and answer its summary as JSON."""
    if request.method != "POST":
        return _reply(405, {"error": "method not allowed"})
    try:
        runtime = runtime or _runtime.get()
    except SettingsError as error:
        log.error("configuration invalid, answering 500: %s",  # noqa: TRY400
                  "; ".join(error.problems))
        return _reply(500, {"error": "job not configured"})
    expected = runtime.settings.job_secret
    given = request.headers.get(JOB_SECRET_HEADER, "")
    if expected is None or not hmac.compare_digest(given.encode("utf-8", "replace"),
                                                   expected.reveal().encode()):
        log.warning("refused reminders request with a missing or wrong job secret")
        return _reply(401, {"error": "unauthorized"})
    log_webhook_state(runtime)
    try:
        summary = runtime.reminders.run()
    except StorageUnavailable:
        log.exception("reminders run stopped: storage unavailable")
        return _reply(503, {"error": "storage unavailable"})
    return _reply(200, summary.as_dict())


def log_webhook_state(runtime: Runtime, now: float | None = None) -> None:
    """Log Telegram's pending update count and last delivery error; never raises."""
    try:
        info = runtime.telegram.webhook_info()
    except TelegramError as error:
        log.warning("webhook state unknown: getWebhookInfo failed with %s", error.code)
        return
    pending = int(info.get("pending_update_count", 0))
    error_date = info.get("last_error_date")
    age = None if error_date is None else max(0, round((now or time.time()) - error_date))
    # Telegram's own words about delivering to us ("Wrong response from the webhook: 503
    # Service Unavailable"): no update content.
    last_error = str(info.get("last_error_message", ""))[:200] or None
    log.info("webhook: %s pending updates, last error %s", pending,
             "none" if age is None else f"{age} s ago: {last_error}",
             extra={"json_fields": {"webhook_pending_updates": pending,
                                    "webhook_last_error_age_s": age,
                                    "webhook_last_error": last_error}})


def _reply(status: int, body: dict[str, object]) -> Response:
    return json.dumps(body), status, {"Content-Type": "application/json"}
