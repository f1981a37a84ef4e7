"""Heavy drivers load only on the path that needs them: a deploy on SQLite never imports
pymongo or the Firestore client, and nothing connects before the first request."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

PROBE = """
import sys
from messagine.runtime import build_runtime
from messagine.settings import Settings
env = {"TELEGRAM_TOKEN": "424242:AAH-some_token_value_0123456789abcd",
       "TELEGRAM_API_URL": "http://127.0.0.1:9", "SQLITE_PATH": ":memory:"}
env.update(dict(arg.split("=", 1) for arg in sys.argv[1:]))
build_runtime(Settings.from_env(env))
print(",".join(sorted(m for m in ("pymongo", "google.cloud.firestore", "babel",
                                 "google.cloud.logging_v2", "mixpanel",
                                 "google.cloud.tasks_v2")
                      if m in sys.modules)))
"""


def loaded(*settings: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, *settings], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_sqlite_loads_no_other_driver():
    assert loaded() == ""


def test_cloud_logging_loads_only_on_google_cloud():
    cloud = ("K_SERVICE=messagine", "ERASURE_PEPPER=test-erasure-pepper-0123456789")
    assert loaded(*cloud, "STORAGE=sqlite") == "google.cloud.logging_v2"
    assert loaded(*cloud, "STORAGE=sqlite", "LOG_FORMAT=text") == ""


def test_mixpanel_loads_only_when_an_event_is_sent():
    # A token alone imports nothing at start: the package loads on the first event.
    assert loaded("MIXPANEL_TOKEN=t", "ANALYTICS_PSEUDONYM_KEY=0123456789abcdef") == ""


def test_mongo_loads_pymongo_and_connects_to_nothing_at_build():
    # Port 9 (discard) has no server: building must not try to reach it.
    assert loaded("MONGODB_URI=mongodb://127.0.0.1:9/") == "pymongo"


def test_cloud_tasks_load_only_when_an_album_is_scheduled():
    # The queue is configured, but no album has been sent: nothing is imported yet.
    assert loaded("ALBUM_QUEUE=projects/p/locations/europe-west1/queues/albums",
                  "ALBUM_FLUSH_URL=https://example.invalid/webhook",
                  "WEBHOOK_SECRET=s3cret") == ""


def test_firestore_loads_its_client_and_connects_to_nothing_at_build():
    # No emulator listens on port 9: building must not try to reach it.
    assert loaded("FIRESTORE_EMULATOR_HOST=127.0.0.1:9", "GOOGLE_CLOUD_PROJECT=demo-x") \
        == "google.cloud.firestore"


LOG_PROBE = """
import logging, sys
if sys.argv[1] == "eager":
    import google.cloud.logging_v2  # the whole package first: the handler imports as usual
from messagine.logs import configure_logging
configure_logging(structured=True, project_id="demo")
deferred = sorted(m for m in sys.modules if m.startswith(("google.cloud.logging_v2.client",
                                                          "google.cloud.logging_v2.services")))
log = logging.getLogger("messagine.probe")
log.info("one line", extra={"json_fields": {"update_id": 7, "outcome": "relayed"}})
try:
    raise KeyError("private")
except KeyError:
    log.exception("update 7 failed")
import google.cloud.logging  # the rest of the library still works when it is used
print("CLIENT", google.cloud.logging.Client.__name__, deferred, file=sys.stderr)
"""


def log_probe(mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", LOG_PROBE, mode], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60)


def test_the_cloud_handler_imports_without_the_api_client_and_writes_the_same_lines():
    deferred, eager = log_probe("deferred"), log_probe("eager")
    assert "CLIENT Client []" in deferred.stderr, "the API client is not imported at start"
    assert "google.cloud.logging_v2.client" in eager.stderr
    assert deferred.stdout == eager.stdout
    lines = deferred.stdout.splitlines()
    assert '"update_id": 7' in lines[-2] and '"stack_trace": ' in lines[-1]
