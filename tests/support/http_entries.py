"""The webhook's and the scheduled job's HTTP entries, called in-process as the platform does.

For tests that drive a Runtime they built (a controlled clock, their own settings) through
the same request handling as production, without a server process.
"""

from __future__ import annotations

import json
from typing import Any

import flask

from conftest import SECRET
from messagine import job, webhook
from messagine.runtime import Runtime

JOB_SECRET = "job-secret"
"""The JOB_SECRET the tests' runtimes are built with."""
APP = flask.Flask(__name__)


def post(runtime: Runtime, update: dict[str, Any]) -> None:
    """Deliver ``update`` through the webhook's HTTP entry, as Telegram does."""
    with APP.test_request_context("/", method="POST", json=update,
                                  headers={webhook.SECRET_HEADER: SECRET}):
        assert webhook.handle(flask.request, runtime)[1] == 200


def run_job(runtime: Runtime) -> dict[str, Any]:
    """One run of the scheduled job through its HTTP entry; its summary."""
    with APP.test_request_context("/", method="POST",
                                  headers={job.JOB_SECRET_HEADER: JOB_SECRET}):
        body, status, _ = job.handle(flask.request, runtime)
    assert status == 200, body
    summary: dict[str, Any] = json.loads(body)
    return summary
