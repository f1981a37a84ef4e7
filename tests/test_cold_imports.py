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
                                 "google.cloud.logging_v2", "mixpanel")
                      if m in sys.modules)))
"""


def loaded(*settings: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, *settings], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_sqlite_loads_no_other_driver():
    assert loaded() == ""


def test_cloud_logging_loads_only_on_google_cloud():
    assert loaded("K_SERVICE=messagine", "STORAGE=sqlite") == "google.cloud.logging_v2"
    assert loaded("K_SERVICE=messagine", "STORAGE=sqlite", "LOG_FORMAT=text") == ""


def test_mixpanel_loads_only_when_an_event_is_sent():
    # A token alone imports nothing at start: the package loads on the first event.
    assert loaded("MIXPANEL_TOKEN=t", "ANALYTICS_PSEUDONYM_KEY=0123456789abcdef") == ""


def test_mongo_loads_pymongo_and_connects_to_nothing_at_build():
    # Port 9 (discard) has no server: building must not try to reach it.
    assert loaded("MONGODB_URI=mongodb://127.0.0.1:9/") == "pymongo"


def test_firestore_loads_its_client_and_connects_to_nothing_at_build():
    # No emulator listens on port 9: building must not try to reach it.
    assert loaded("FIRESTORE_EMULATOR_HOST=127.0.0.1:9", "GOOGLE_CLOUD_PROJECT=demo-x") \
        == "google.cloud.firestore"
