"""The HTTP face of the scheduled reminders job (the ``reminders`` entry point of main.py).

Not public: IAM lets only Cloud Scheduler's service account call it, and the function
also refuses any request without the header ``X-Job-Secret`` equal to JOB_SECRET (401),
so a deploy that was left open by mistake is still closed.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import TYPE_CHECKING

from messagine.runtime import LazyRuntime, Runtime
from messagine.settings import SettingsError
from messagine.storage.port import StorageUnavailable

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
    try:
        summary = runtime.reminders.run()
    except StorageUnavailable:
        log.exception("reminders run stopped: storage unavailable")
        return _reply(503, {"error": "storage unavailable"})
    return _reply(200, summary.as_dict())


def _reply(status: int, body: dict[str, object]) -> Response:
    return json.dumps(body), status, {"Content-Type": "application/json"}
