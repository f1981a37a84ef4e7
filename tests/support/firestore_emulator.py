"""The real Firestore emulator (from the Google Cloud CLI) on 127.0.0.1, for the tests.

It runs in its own process group, because stopping only the java launcher would leave
the emulator running. Each test gets a project of its own, so tests never see each
other's documents; ``reset`` frees a project's documents when the test is done.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

JAR = Path(os.environ.get(
    "FIRESTORE_EMULATOR_JAR",
    "/usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FirestoreEmulator:
    """One emulator process; ``host`` is what FIRESTORE_EMULATOR_HOST takes."""

    def __init__(self, log_path: Path) -> None:
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            ["java", "-Xmx1g", "-cp", str(JAR),
             "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
             "--host=127.0.0.1", f"--port={self.port}"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if requests.get(f"http://{self.host}/", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("the Firestore emulator did not start:\n"
                           + log_path.read_text(errors="replace")[-2000:])

    def reset(self, project: str) -> None:
        """Delete every document of ``project``."""
        requests.delete(f"http://{self.host}/emulator/v1/projects/{project}/databases/"
                        "(default)/documents", timeout=30).raise_for_status()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()
