"""Cold start: process start to the first 200 on a relay update, against a bare function.

    .venv/bin/python benchmarks/cold_start.py [--runs 5]

Starts `functions-framework` (the production entry point main.webhook, on SQLite with the
fake Bot API) as a new process per run, posts one relayed text message as soon as the port
accepts, and times from process start to the 200. The baseline is a bare function that
imports only functions-framework, measured in the same run. Also prints the biggest
imports of main.py (python -X importtime) and the time the Cloud Logging handler takes to
import once main.py is loaded: as the bot imports it (its packages' __init__ deferred,
messagine/logs.py) and whole (the package first, as a plain import would).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from common import ROOT, SECRET, free_port  # the benchmarks' folder is on sys.path

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.runtime import build_runtime
from messagine.settings import Settings


def time_to_first_200(target: str, source: Path, env: dict[str, str], body: dict) -> float:
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "functions_framework", "--target", target, "--source",
         str(source), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                response = requests.post(
                    f"http://127.0.0.1:{port}/", json=body, timeout=30,
                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
                break
            except requests.ConnectionError:
                time.sleep(0.005)
        elapsed = time.perf_counter() - started
        if response.status_code != 200 or response.text != "ok":
            raise RuntimeError(f"{target} answered {response.status_code}")
        return elapsed
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with FakeBotApi() as api, tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "bench.sqlite3")
        # The store is named, not left to the automatic choice, and users are taken as of
        # age: the probe must be a relayed message, nothing else.
        env = {"TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url,
               "WEBHOOK_SECRET": SECRET, "STORAGE": "sqlite", "SQLITE_PATH": db,
               "MIN_AGE": "0"}
        setup = build_runtime(Settings.from_env(env))
        alice, bob = api.user(1, "Alice"), api.user(2, "Bob")
        setup.pipeline.process(alice.command("find_chat"))
        outcome = setup.pipeline.process(bob.command("find_chat")).outcome
        if outcome != "find:matched":
            raise RuntimeError(f"the probe's chat was not made: {outcome}")
        configs = {
            "bare function (functions-framework only)": ("bare", ROOT / "benchmarks" /
                                                         "bare_function.py", {}),
            "bot, local text logs": ("webhook", ROOT / "main.py", {**env, "LOG_FORMAT": "text"}),
            "bot, Cloud Logging (K_SERVICE set)": ("webhook", ROOT / "main.py", {
                **env, "K_SERVICE": "messagine", "STORAGE": "sqlite",
                "GOOGLE_CLOUD_PROJECT": "demo",
                "ERASURE_PEPPER": "benchmark-erasure-pepper-0123456789",
                "ALBUM_QUEUE": "projects/demo/locations/europe-west1/queues/albums",
                "ALBUM_FLUSH_URL": "https://europe-west1-demo.cloudfunctions.net/messagine"}),
        }
        results: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(runs):  # interleaved, so drift hits every configuration alike
            for name, (target, source, extra) in configs.items():
                body = alice.text("cold start probe")
                results[name].append(time_to_first_200(target, source, extra, body))
        base = statistics.median(results["bare function (functions-framework only)"])
        print(f"cold start, process start to first 200 (median of {runs}):")
        for name, values in results.items():
            median = statistics.median(values)
            print(f"  {name:45s} {median * 1000:7.0f} ms   x{median / base:.2f} of bare")
    print_import_breakdown("import main", "main.py")
    print(f"importing the Cloud Logging handler after main.py (median of {runs}):")
    for how, first in (("as the bot does (deferred __init__)", ""),
                       ("whole (google.cloud.logging_v2 first)", "import google.cloud.logging_v2")):
        times = [handler_import_ms(first) for _ in range(runs)]
        print(f"  {how:45s} {statistics.median(times):7.0f} ms")


HANDLER_PROBE = """
import time, main, telebot, requests
started = time.perf_counter()
{first}
from messagine.logs import _structured_handler_class
_structured_handler_class()
print((time.perf_counter() - started) * 1000)
"""


def handler_import_ms(first: str) -> float:
    """Milliseconds to import the Cloud Logging handler in a process that loaded main.py."""
    return float(subprocess.run([sys.executable, "-c", HANDLER_PROBE.format(first=first)],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout)


def print_import_breakdown(statement: str, label: str) -> None:
    """The direct imports of ``statement`` by cumulative time (python -X importtime)."""
    imports = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                             cwd=ROOT, capture_output=True, text=True, check=True).stderr
    rows = []
    total = 0
    for line in imports.splitlines()[1:]:
        parts = line.split("|")
        if len(parts) != 3:
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth == 0:
            total += int(parts[1])
        elif depth == 1:
            rows.append((int(parts[1]), name.strip()))
    print(f"imports of {label}: {total / 1000:.0f} ms in all; the largest:")
    for cumulative, name in sorted(rows, reverse=True)[:6]:
        print(f"  {name:40s} {cumulative / 1000:7.1f} ms")


if __name__ == "__main__":
    main()
