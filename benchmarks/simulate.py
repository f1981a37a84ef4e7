"""The delivery simulator at benchmark size, on one backend, with or without faults.

    .venv/bin/python benchmarks/simulate.py --backend sqlite --users 400 --messages 10
    .venv/bin/python benchmarks/simulate.py --backend firestore --faults
    .venv/bin/python benchmarks/simulate.py --backend sqlite --slow-copies --leavers

Runs messagine/dev/simulator.py: functions-framework instances of main.py with several
workers each, Telegram's delivery rules, and (with --faults) the fake Bot API failing a
share of calls, the store taken away and back, and workers killed mid-request. With
--slow-copies, a share of copies is made only after the simulated Telegram gave up on the
request (re-delivered while the first attempt still runs); with --leavers, users leave
mid-chat while copies to them are held back by 429s. Prints each report and exits 1 if
a text was lost, doubled (beyond the send-record window) or misrouted, or an invariant
broke. Always runs the same load without faults first, so the cost of a condition is a
ratio in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from common import SECRET  # puts the project and tests/ on sys.path

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.dev.simulator import Faults, Load, Report, Simulation
from support.simulated_backends import open_store

ENV = {"WEBHOOK_SECRET": SECRET, "MIN_AGE": "0", "FLOOD_LIMIT": "10000",
       "RECENT_PARTNERS": "0", "TELEGRAM_TIMEOUT_SECONDS": "2", "LOG_FORMAT": "text",
       "LOG_LEVEL": "WARNING", "REQUEST_TIMEOUT_SECONDS": "10"}
# A 10 s request timeout: a killed worker's claim blocks its update for 20 s, not 60 s
# (attempts here last seconds: 2 s Bot API timeout, 429s of 1 s, 3 s storage outages).
FAULTS = Faults(api_5xx=0.05, api_429=0.02, api_timeout=0.01, api_403=0.005,
                kill_every_s=2.0, storage_outages=3, outage_s=3.0)
# Telegram gives up after 1.5 s; a share of copies takes 2.5 s (the bot waits up to 5 s).
SLOW = Faults(slow_copies=0.3, slow_s=2.5, api_429=0.05)
SLOW_DELIVERY_TIMEOUT_S = 1.5
SLOW_ENV = {"TELEGRAM_TIMEOUT_SECONDS": "5"}
LEAVING = Faults(leavers=0.5, held_copies=0.5)


def run(backend: str, load: Load, faults: Faults, number: int,
        env: dict[str, str] | None = None) -> Report:
    with tempfile.TemporaryDirectory() as tmp, \
            open_store(backend, Path(tmp), f"simulate-{number}") as simulated, \
            FakeBotApi() as api:
        simulation = Simulation(api, {**ENV, **simulated.env, **(env or {})}, load, faults,
                                simulated.read_state, Path(tmp),
                                storage_down=simulated.storage_down,
                                storage_up=simulated.storage_up, seed=number,
                                read_records=simulated.export_user)
        return simulation.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["sqlite", "mongo", "firestore"],
                        default="sqlite")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-connections", type=int, default=40)
    parser.add_argument("--faults", action="store_true")
    parser.add_argument("--slow-copies", action="store_true",
                        help="copies made after Telegram's delivery timeout: re-delivery "
                             "while the first attempt runs")
    parser.add_argument("--leavers", action="store_true",
                        help="users leave mid-chat while copies to them are held by 429s")
    args = parser.parse_args()
    load = Load(users=args.users, messages_per_user=args.messages, rounds=args.rounds,
                instances=args.instances, workers_per_instance=args.workers,
                max_connections=args.max_connections)
    print(f"{args.backend}: {args.users} users, {args.messages} texts each per round, "
          f"{args.rounds} rounds, {args.instances} instances x {args.workers} workers, "
          f"max_connections {args.max_connections}")
    baseline = run(args.backend, load, Faults(), 1)
    print(f"  no faults: {baseline.summary()}")
    ok = baseline.ok
    conditions = [("faults", args.faults, FAULTS, load, None),
                  ("slow copies", args.slow_copies, SLOW,
                   replace(load, delivery_timeout_s=SLOW_DELIVERY_TIMEOUT_S), SLOW_ENV),
                  ("leavers", args.leavers, LEAVING, load, None)]
    for number, (name, wanted, faults, condition_load, env) in enumerate(conditions, 2):
        if not wanted:
            continue
        report = run(args.backend, condition_load, faults, number, env)
        print(f"  {name}: {report.summary()}")
        rate = (report.updates / report.seconds) / (baseline.updates / baseline.seconds)
        print(f"  throughput with {name}: x{rate:.2f} of the run without")
        ok = ok and report.ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
