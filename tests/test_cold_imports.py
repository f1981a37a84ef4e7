"""Heavy drivers load only on the path that needs them: a deploy on SQLite never imports
pymongo, and nothing connects before the first request."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

PROBE = """
import sys
from messagine.runtime import build_runtime
from messagine.settings import Settings
env = {"TELEGRAM_TOKEN": "123456789:AAH-some_token_value_0123456789abcd",
       "TELEGRAM_API_URL": "http://127.0.0.1:9", "SQLITE_PATH": ":memory:"}
env.update(dict(arg.split("=", 1) for arg in sys.argv[1:]))
build_runtime(Settings.from_env(env))
print(",".join(sorted(m for m in ("pymongo", "google.cloud.firestore", "babel")
                      if m in sys.modules)))
"""


def loaded(*settings: str) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, *settings], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout.strip()


def test_sqlite_loads_no_other_driver():
    assert loaded() == ""


def test_mongo_loads_pymongo_and_connects_to_nothing_at_build():
    # Port 9 (discard) has no server: building must not try to reach it.
    assert loaded("MONGODB_URI=mongodb://127.0.0.1:9/") == "pymongo"
