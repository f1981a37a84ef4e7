"""The real Firestore emulator (from the Google Cloud CLI) on 127.0.0.1, for the tests.

It runs in its own process group, because stopping only the java launcher would leave
the emulator running. Each test gets a project of its own, so tests never see each
other's documents; ``reset`` frees a project's documents when the test is done. As the
registry's test plugin for Firestore it defines the fixtures ``firestore_emulator`` (one
per session) and ``firestore_test_store`` (a project of its own per repository).
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
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


_projects = itertools.count(1)


def firestore_project() -> str:
    """A project of its own for one test: the emulator keeps projects apart."""
    return f"demo-test-{os.getpid()}-{next(_projects)}"


@pytest.fixture(scope="session")
def firestore_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirestoreEmulator]:
    """The Firestore emulator of the Google Cloud CLI, started once for the session."""
    if not JAR.exists() or shutil.which("java") is None:
        if os.environ.get("MESSAGINE_REQUIRE_FIRESTORE") == "1":
            pytest.fail(f"no Firestore emulator ({JAR}) or no java, although it is required")
        pytest.skip(f"no Firestore emulator: {JAR} or java is missing")
    emulator = FirestoreEmulator(tmp_path_factory.mktemp("firestore") / "emulator.log")
    yield emulator
    emulator.stop()


class FirestoreTestStore:
    """Empty Firestore repositories, each in a project of its own, on one emulator."""

    def __init__(self, emulator: FirestoreEmulator) -> None:
        self.emulator = emulator

    def open(self, where: Path) -> Any:
        """An empty repository in a new project (``where`` is for file-based stores)."""
        from messagine.storage.firestore import FirestoreRepository

        del where
        return FirestoreRepository(firestore_project(), emulator_host=self.emulator.host)

    def env(self) -> dict[str, str]:
        """The settings that select Firestore, in a new project."""
        return {"STORAGE": "firestore", "FIRESTORE_EMULATOR_HOST": self.emulator.host,
                "GOOGLE_CLOUD_PROJECT": firestore_project()}

    def drop(self, repository: Any) -> None:
        """Delete ``repository``'s documents and close it."""
        self.emulator.reset(repository.client.project)
        repository.close()

    def simulated(self, work_dir: Path) -> AbstractContextManager[Any]:
        """The simulator's Firestore store: a new project behind a proxy that can be cut."""
        from support.simulated_backends import firestore_store

        del work_dir
        return firestore_store(self.emulator, firestore_project())


@pytest.fixture(scope="session")
def firestore_test_store(firestore_emulator: FirestoreEmulator) -> FirestoreTestStore:
    """The Firestore test store (see ``messagine.storage.registry``)."""
    return FirestoreTestStore(firestore_emulator)
