"""The delivery simulator at benchmark size, on one backend, with or without faults.

    .venv/bin/python benchmarks/simulate.py --backend sqlite --users 400 --messages 10
    .venv/bin/python benchmarks/simulate.py --backend firestore --faults

Runs messagine/dev/simulator.py: functions-framework instances of main.py with several
workers each, Telegram's delivery rules, and (with --faults) the fake Bot API failing a
share of calls, the store taken away and back, and workers killed mid-request. Prints
the report and exits 1 if a text was lost or doubled (beyond the send-record window) or
an invariant broke. Also runs the same load without faults first when --faults is given,
so the cost of the faults is a ratio in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import SECRET  # puts the project and tests/ on sys.path

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.dev.simulator import Faults, Load, Report, Simulation
from support.simulated_backends import open_store

ENV = {"WEBHOOK_SECRET": SECRET, "MIN_AGE": "0", "FLOOD_LIMIT": "10000",
       "RECENT_PARTNERS": "0", "TELEGRAM_TIMEOUT_SECONDS": "2", "LOG_FORMAT": "text",
       "LOG_LEVEL": "WARNING"}
FAULTS = Faults(api_5xx=0.05, api_429=0.02, api_timeout=0.01, api_403=0.005,
                kill_every_s=2.0, storage_outages=3, outage_s=3.0)


def run(backend: str, load: Load, faults: Faults, number: int) -> Report:
    with tempfile.TemporaryDirectory() as tmp, \
            open_store(backend, Path(tmp), f"simulate-{number}") as simulated, \
            FakeBotApi() as api:
        simulation = Simulation(api, {**ENV, **simulated.env}, load, faults,
                                simulated.read_state, Path(tmp),
                                storage_down=simulated.storage_down,
                                storage_up=simulated.storage_up, seed=number)
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
    if args.faults:
        faulty = run(args.backend, load, FAULTS, 2)
        print(f"  faults:    {faulty.summary()}")
        rate = (faulty.updates / faulty.seconds) / (baseline.updates / baseline.seconds)
        print(f"  throughput with faults: x{rate:.2f} of the run without")
        ok = ok and faulty.ok
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
