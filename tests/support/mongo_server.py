"""mongoeco's MongoDB wire-protocol server on 127.0.0.1, for the tests and benchmarks.

It keeps its data in a file, so it can be stopped and started again (an outage) without
losing anything. It runs on Python 3.13 in its own environment (.venv-mongo).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def mongoeco_python() -> str | None:
    """The interpreter that has mongoeco, if this machine has one."""
    candidate = os.environ.get("MONGOECO_PYTHON") or str(ROOT / ".venv-mongo" / "bin" / "python")
    return candidate if Path(candidate).exists() else None


class MongoServer:
    """mongoeco's MongoDB wire-protocol server on 127.0.0.1, data kept in a file."""

    def __init__(self, python: str, data: Path) -> None:
        self.python = python
        self.data = data
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/?directConnection=true"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.python, str(ROOT / "tests" / "support" / "mongoeco_server.py"),
             str(self.port), str(self.data)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError(f"the MongoDB test server did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
