"""An unhandled exception reaches Error Reporting: on Google Cloud its log line carries the
stack trace and the service context Error Reporting reads, and nothing a user sent."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

PROBE = """
import os
import sys
from messagine import conversation
from messagine.dev.fake_bot_api import FakeBotApi
from messagine.runtime import build_runtime
from messagine.settings import Settings

def about(self, user, answer):
    # An exception whose message quotes what a user sent, as a library's might.
    raise ValueError("the user wrote: meet me at the harbour")

conversation.Conversation.about = about
# Cloud Run names the service and revision in the environment of the instance.
os.environ.update({"K_SERVICE": "messagine", "K_REVISION": "messagine-00042"})
with FakeBotApi() as api:
    env = {"TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url, "STORAGE": "sqlite",
           "SQLITE_PATH": ":memory:", "K_SERVICE": "messagine", "K_REVISION": "messagine-00042",
           "GOOGLE_CLOUD_PROJECT": "demo-project", "MIN_AGE": "0",
           "ERASURE_PEPPER": "test-erasure-pepper-0123456789"}
    runtime = build_runtime(Settings.from_env(env))
    result = runtime.pipeline.process(api.user(5, "Eve").command("about"))
    print("RESULT", result.status, result.outcome, file=sys.stderr)
"""


def test_an_unhandled_exception_is_an_error_event_without_content():
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    assert "RESULT 200 error" in run.stderr
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    (event,) = [r for r in records if r["severity"] == "ERROR"]
    assert event["@type"] == ("type.googleapis.com/google.devtools.clouderrorreporting."
                              "v1beta1.ReportedErrorEvent")
    assert event["serviceContext"] == {"service": "messagine", "version": "messagine-00042"}
    trace = event["stack_trace"]
    assert trace.startswith("Traceback (most recent call last):\n  File ")
    assert 'messagine/pipeline.py", line ' in trace and "in process" in trace
    assert trace.endswith("\nValueError\n"), "the type, never the message"
    assert event["message"].startswith("update ") and event["message"].endswith(" failed")
    assert "harbour" not in run.stdout
    assert not [r for r in records if r["severity"] != "ERROR" and "stack_trace" in r]
