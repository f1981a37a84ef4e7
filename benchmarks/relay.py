"""Relay throughput and latency through the real HTTP entry point, against a baseline.

    .venv/bin/python benchmarks/relay.py [--messages 2000] [--clients 8] [--backend sqlite]
    (--backend mongo starts mongoeco's server, --backend firestore the emulator)

Starts functions-framework serving main.py (the bot, with the fake Bot API on loopback)
and, in the same run, functions-framework serving a baseline function that makes the one
fake Bot API call a relay makes and nothing else. Clients send relayed text messages of
many pairs in parallel (one in flight per chat, as Telegram does). Prints messages per
second and latency p50/p99 for both, and the ratios.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from support.simulated_backends import open_store


def serve(target: str, source: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "functions_framework", "--target", target, "--source",
         str(source), "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env, "THREADS": "16"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(300):
        try:
            requests.get(url, timeout=1)
            return process, url
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{target} did not start")


def drive(url: str, chats: list[list[dict]], clients: int) -> tuple[float, list[float]]:
    """Send every chat's updates in order, chats in parallel; returns (seconds, latencies)."""
    latencies: list[float] = []
    session_per_thread: dict[int, requests.Session] = {}

    def run_chat(updates: list[dict]) -> list[float]:
        import threading

        session = session_per_thread.setdefault(threading.get_ident(), requests.Session())
        own = []
        for update in updates:
            started = time.perf_counter()
            response = session.post(url, json=update, timeout=30,
                                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
            own.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"status {response.status_code}")
        return own

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for result in pool.map(run_chat, chats):
            latencies.extend(result)
    return time.perf_counter() - started, latencies


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--backend", choices=["sqlite", "mongo", "firestore"],
                        default="sqlite")
    args = parser.parse_args()
    with FakeBotApi() as api, tempfile.TemporaryDirectory() as tmp, \
            open_store(args.backend, Path(tmp), "relay") as store:
        env = {"TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url,
               "WEBHOOK_SECRET": SECRET, "LOG_FORMAT": "text", "LOG_LEVEL": "WARNING",
               "FLOOD_LIMIT": "10000", "MIN_AGE": "0", **store.env}
        bot, bot_url = serve("webhook", ROOT / "main.py", env)
        base, base_url = serve("baseline", ROOT / "benchmarks" / "baseline_function.py", env)
        try:
            pairs = args.clients * 2
            chats: list[list[dict]] = []
            for pair in range(pairs):
                a, b = api.user(10 + 2 * pair, "A"), api.user(11 + 2 * pair, "B")
                for update in (a.command("find_chat"), b.command("find_chat")):
                    requests.post(bot_url, json=update, timeout=30,
                                  headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
                chats.append([a.text(f"message {i}") for i in range(args.messages // pairs)])
            sent = sum(len(c) for c in chats)
            base_time, base_lat = drive(base_url, chats, args.clients)
            bot_time, bot_lat = drive(bot_url, chats, args.clients)
            copies = len(api.calls_of("copyMessage"))
            assert copies == sent, f"{copies} copies for {sent} messages"
        finally:
            for process in (bot, base):
                process.terminate()
                process.wait()
    print(f"{sent} relayed texts, {args.clients} clients, {args.backend}, "
          "fake Bot API on loopback")
    for name, seconds, lat in (("baseline", base_time, base_lat), ("bot", bot_time, bot_lat)):
        p50, p99 = statistics.median(lat) * 1000, percentile(lat, 0.99) * 1000
        print(f"  {name:9s} {sent / seconds:7.0f} msg/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms")
    print(f"  throughput ratio bot/baseline: {base_time / bot_time:.2f}")
    added_p50 = (statistics.median(bot_lat) - statistics.median(base_lat)) * 1000
    added_p99 = (percentile(bot_lat, 0.99) - percentile(base_lat, 0.99)) * 1000
    print(f"  added latency: p50 {added_p50:.1f} ms, p99 {added_p99:.1f} ms")


if __name__ == "__main__":
    main()
