"""What the benchmark scripts share: the project root on the path, a port, the secret."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # the project, and the test servers in tests/support
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

SECRET = "benchmark-secret"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
