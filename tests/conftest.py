"""Shared fixtures: the fake Bot API, repositories per backend, the bot in-process and the
real functions-framework server in a subprocess.

No test may reach the network: a guard refuses every connection that is not to loopback.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

import hypothesis
import pytest
import requests

from messagine.dev.fake_bot_api import FakeBotApi
from messagine.domain.claims import LEASE_S
from messagine.runtime import Runtime, build_runtime
from messagine.settings import Settings
from messagine.storage.registry import REGISTRY
from messagine.storage.registry import backend as registry_backend

ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-webhook-secret_0123456789"
PEPPER = "test-erasure-pepper-0123456789"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and self.family in (socket.AF_INET, socket.AF_INET6) \
            and host not in _LOOPBACK:
        raise RuntimeError(f"test tried to reach the network: {host}")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]

# No per-example time limit: speed is measured in benchmarks/, never asserted in a test,
# and a loaded 2-core machine would otherwise fail a pure rule for being slow.
hypothesis.settings.register_profile("messagine", deadline=None)
hypothesis.settings.load_profile("messagine")


@pytest.fixture
def fake_api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as api:
        yield api


def bot_env(api: FakeBotApi, sqlite_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a bot that talks to ``api`` and stores in ``sqlite_path``."""
    return {"TELEGRAM_TOKEN": api.token, "TELEGRAM_API_URL": api.url,
            "WEBHOOK_SECRET": SECRET, "STORAGE": "sqlite", "SQLITE_PATH": str(sqlite_path),
            "TELEGRAM_TIMEOUT_SECONDS": "5",
            # The age question is tested on its own; elsewhere users are taken as of age.
            "MIN_AGE": "0",
            # Tests send faster than any person; the flood limit has tests of its own.
            "FLOOD_LIMIT": "10000", **extra}


# -- repositories: one contract, every backend -------------------------------------------
# Each backend's test server and store come from its registry entry: its test plugin (a
# module of tests/support) defines the fixture the entry names.

pytest_plugins = sorted({backend.test_plugin for backend in REGISTRY})
BACKENDS = [backend.name for backend in REGISTRY]


class BackendStore(Protocol):
    """What a backend's test fixture gives: empty repositories, settings selecting it, and
    a store for the delivery simulator that can be taken away (tests/test_simulator.py)."""

    def open(self, where: Path) -> Any: ...
    def env(self) -> dict[str, str]: ...
    def drop(self, repository: Any) -> None: ...
    def simulated(self, work_dir: Path) -> AbstractContextManager[Any]: ...


def mongo_database_name() -> str:
    """A MongoDB database name no other test uses (support.mongo_server's)."""
    # Imported late: pytest loads the plugin modules itself, to rewrite their asserts.
    from support.mongo_server import mongo_database_name as name

    return name()


def firestore_project() -> str:
    """A Firestore project no other test uses (support.firestore_emulator's)."""
    from support.firestore_emulator import firestore_project as name

    return name()


def store_of(request: pytest.FixtureRequest, backend: str) -> BackendStore:
    """The test store of ``backend`` (starting its server on first use)."""
    store: BackendStore = request.getfixturevalue(registry_backend(backend).test_fixture)
    return store


def open_test_repository(request: pytest.FixtureRequest, backend: str, where: Path) -> Any:
    """An empty repository of ``backend`` (a file-based one in the file ``where``)."""
    return store_of(request, backend).open(where)


def drop_test_repository(request: pytest.FixtureRequest, repo: Any) -> None:
    """Free what ``open_test_repository`` made."""
    store_of(request, repo.backend).drop(repo)


@pytest.fixture(params=BACKENDS)
def repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh, empty repository of each backend in turn."""
    repo = open_test_repository(request, request.param, tmp_path / "contract.sqlite3")
    yield repo
    drop_test_repository(request, repo)


# -- the bot in this process -------------------------------------------------------------

class Clock:
    """A controllable clock for the services."""

    def __init__(self, now: float | None = None) -> None:
        self.now = float(int(time.time())) if now is None else now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def bot(fake_api: FakeBotApi, tmp_path: Path, clock: Clock) -> Runtime:
    """The whole bot wired in this process against the fake Bot API and SQLite."""
    settings = Settings.from_env(bot_env(fake_api, tmp_path / "bot.sqlite3"))
    return build_runtime(settings, clock=clock)


# -- the real HTTP entry point -----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class FunctionServer:
    """``functions-framework --target webhook`` serving main.py in a subprocess."""

    def __init__(self, env: dict[str, str], workers: int = 1, target: str = "webhook", *,
                 program: list[str] | None = None, inherit_env: bool = True,
                 port: int | None = None) -> None:
        """Start the server; ``program`` replaces ``python -m functions_framework`` and
        ``inherit_env=False`` passes ``env`` alone (with PATH), as a fresh shell would;
        ``port``: a port chosen before (when ``env`` must name the server's own URL)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        base = dict(os.environ) if inherit_env else {"PATH": os.environ.get("PATH", "")}
        full_env = {**base, **env, "WORKERS": str(workers), "THREADS": "8",
                    "PYTHONUNBUFFERED": "1"}
        self.log_path = Path(env["SQLITE_PATH"]).with_suffix(".log")
        self._mark = 0
        self._traces = itertools.count(0xABC0001)
        self.trace_id = ""
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*(program or [sys.executable, "-m", "functions_framework"]), "--target", target,
             "--source", str(ROOT / "main.py"), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url, timeout=1)
                return
            except requests.ConnectionError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("functions-framework did not start:\n" + self.log())

    def post(self, update: Any, secret: str | None = SECRET, **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        self.trace_id = f"{next(self._traces):032x}"
        headers.setdefault("X-Cloud-Trace-Context", f"{self.trace_id}/1;o=1")
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        if isinstance(update, (bytes, str)):
            return requests.post(self.url, data=update, headers=headers, timeout=30, **kwargs)
        return requests.post(self.url, json=update, headers=headers, timeout=30, **kwargs)

    def log(self) -> str:
        """What the server logged since the last ``mark_log``."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[self._mark:]

    def mark_log(self) -> None:
        self._log.flush()
        self._mark = len(self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def backend_env(request: pytest.FixtureRequest, backend: str) -> dict[str, str]:
    """The settings that select ``backend`` (a server-based one in a database of its own)."""
    if backend == "sqlite-cloud-logging":  # as on Google Cloud: JSON logs on stdout
        return {"STORAGE": "sqlite", "K_SERVICE": "messagine", "ERASURE_PEPPER": PEPPER,
                "GOOGLE_CLOUD_PROJECT": "demo-project",
                "ALBUM_QUEUE": "projects/demo-project/locations/europe-west1/queues/albums",
                "ALBUM_FLUSH_URL": "https://europe-west1-demo-project.cloudfunctions.net/m"}
    return store_of(request, backend).env()


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[FunctionServer, FakeBotApi]]:
    """One fake Bot API and one function server per test module (starting one takes ~1 s).

    A module selects backends with ``pytestmark = pytest.mark.parametrize("served",
    BACKENDS, indirect=True)``; by default it is SQLite.
    """
    backend = getattr(request, "param", "sqlite")
    with FakeBotApi() as api:
        path = tmp_path_factory.mktemp("served") / "server.sqlite3"
        server = FunctionServer({**bot_env(api, path), **backend_env(request, backend)})
        yield server, api
        server.stop()


@pytest.fixture
def function_server(served: tuple[FunctionServer, FakeBotApi]) -> FunctionServer:
    """The module's function server; its fake Bot API starts each test with no calls."""
    server, api = served
    api.reset_calls()
    api.clear_failures()
    server.mark_log()
    return server


@pytest.fixture
def served_api(served: tuple[FunctionServer, FakeBotApi]) -> FakeBotApi:
    """The fake Bot API behind ``function_server``."""
    return served[1]


Deliver = Callable[[dict[str, Any]], Any]


@pytest.fixture
def deliver(bot: Runtime) -> Deliver:
    """Process one update in-process and return the pipeline's result."""
    return bot.pipeline.process


MakeBot = Callable[..., Runtime]


@pytest.fixture(params=BACKENDS)
def make_bot(request: pytest.FixtureRequest, fake_api: FakeBotApi, tmp_path: Path,
             clock: Clock) -> Iterator[MakeBot]:
    """Build the bot in-process on each backend in turn, with extra settings."""
    made: list[tuple[Runtime, dict[str, str]]] = []

    def make(**extra: str) -> Runtime:
        env = bot_env(fake_api, tmp_path / f"bot{len(made)}.sqlite3", **extra)
        env |= backend_env(request, request.param)
        runtime = build_runtime(Settings.from_env(env), clock=clock)
        made.append((runtime, env))
        return runtime

    yield make
    for runtime, _ in made:
        drop_test_repository(request, runtime.repository)


def serve_from_threads(process: Callable[[dict[str, Any]], Any], users: list[Any],
                       per_user: int) -> list[BaseException]:
    """Each user sends /help ``per_user`` times from a thread of their own; the errors."""
    errors: list[BaseException] = []

    def serve(user: Any) -> None:
        try:
            for _ in range(per_user):
                assert process(user.command("help")).status == 200
        except BaseException as error:  # noqa: BLE001 - reported by the caller
            errors.append(error)

    threads = [threading.Thread(target=serve, args=(u,)) for u in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def redeliver_until_processed(runtime: Runtime, update: dict[str, Any],
                              seconds: float = 60) -> str:
    """Re-deliver ``update`` as Telegram does while the store is still coming back.

    A claim written by the failed attempt whose answer was lost (and whose release could
    not reach the store either) holds its lease: Telegram's re-deliveries get 503 until it
    expires. A ``Clock``-driven runtime skips that wait by moving the clock past the lease.
    """
    deadline = time.monotonic() + seconds
    while (outcome := runtime.pipeline.process(update).outcome) in (
            "retry:storage", "retry:in_progress"):
        assert time.monotonic() < deadline, "the store came back but requests still fail"
        clock = runtime.pipeline.clock
        if outcome == "retry:in_progress" and isinstance(clock, Clock):
            clock.advance(LEASE_S)
        time.sleep(0.5)
    return outcome


def pair_over_http(server: FunctionServer, api: FakeBotApi, base: int
                   ) -> tuple[Any, Any]:
    """Two new users (ids base+1, base+2) paired through the HTTP entry; (A, B)."""
    a, b = api.user(base + 1, "A"), api.user(base + 2, "B")
    for user in (a, b):
        assert server.post(user.command("find_chat")).status_code == 200
    assert any("Chat started" in t for t in b.texts()), "paired with each other"
    return a, b
