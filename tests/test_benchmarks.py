"""Every benchmark runs at a smoke size, so a benchmark that breaks fails CI.

The figures they print are not asserted (speed is judged from the full-size runs in
docs/performance.md, as ratios against a baseline of the same run); only that each script
finishes, checks its own invariants (each asserts what it measured is right) and prints
its result lines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

SMOKE = {
    "cold_start": (["--runs", "1"], r"bot, Cloud Logging .* x[\d.]+ of bare"),
    "matching-sqlite": (["--users", "20", "--processes", "2"],
                        r"20 users, 2 processes, sqlite: 10 pairs"),
    "matching-mongo": (["--users", "10", "--processes", "2", "--backend", "mongo"],
                       r"10 users, 2 processes, mongo: 5 pairs"),
    "matching-firestore": (["--users", "10", "--processes", "2", "--backend", "firestore"],
                           r"10 users, 2 processes, firestore: 5 pairs"),
    "relay-sqlite": (["--messages", "40", "--clients", "2"], r"throughput ratio bot/baseline"),
    "relay-mongo": (["--messages", "20", "--clients", "2", "--backend", "mongo"],
                    r"throughput ratio bot/baseline"),
    "relay-firestore": (["--messages", "20", "--clients", "2", "--backend", "firestore"],
                        r"throughput ratio bot/baseline"),
    "simulate": (["--backend", "sqlite", "--users", "6", "--messages", "2", "--rounds", "1",
                  "--instances", "1", "--workers", "2", "--faults"],
                 (r"faults: .* 0 doubled, 0 misrouted.*0 not delivered \(sender not told: lost\)"
                  r".*violations: \[\][^\n]*\n  throughput with faults")),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_benchmark_runs_at_smoke_size(name: str, request: pytest.FixtureRequest):
    args, expected = SMOKE[name]
    env = dict(os.environ)
    if "mongo" in args:
        env["MONGODB_URI"] = request.getfixturevalue("mongo_uri")
    if "firestore" in args:
        env["FIRESTORE_EMULATOR_HOST"] = request.getfixturevalue("firestore_emulator").host
    script = ROOT / "benchmarks" / f"{name.split('-', maxsplit=1)[0]}.py"
    done = subprocess.run([sys.executable, str(script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert re.search(expected, done.stdout), done.stdout[-3000:]
