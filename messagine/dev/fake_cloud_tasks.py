"""A stand-in for Cloud Tasks over REST: creates named tasks once and runs them on time.

A real HTTP server on 127.0.0.1 that google-cloud-tasks' own REST transport talks to
(``client_options={"api_endpoint": ...}``). ``CreateTask`` stores a task by name and
answers 409 ALREADY_EXISTS for a name it has seen, as Cloud Tasks does; a dispatcher
thread then sends each task's HTTP request at its schedule time and retries it while the
answer is not 2xx, waiting and giving up as the queue's retry config (``Retries``) says. Tests
and the delivery simulator use it; it is never deployed.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from messagine.domain.albums import RETRIES, Retries


@dataclass
class FakeTask:
    """One created task and what became of it."""

    name: str
    url: str
    headers: dict[str, str]
    body: bytes
    run_at: float
    statuses: list[int] = field(default_factory=list)
    """The HTTP status of each attempt, in order."""


class FakeCloudTasks:
    """The fake server; ``tasks`` by name, ``creates`` counts every CreateTask call."""

    def __init__(self, retries: Retries = RETRIES) -> None:
        self.tasks: dict[str, FakeTask] = {}
        self.creates = 0
        self.fail_creates = 0
        """Answer this many CreateTask calls with 503 (then succeed)."""
        self.retries = retries
        self._lock = threading.Lock()
        self._stop = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                status, answer = fake._create(self.path, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True)
        self._dispatcher.start()

    @property
    def url(self) -> str:
        """The endpoint to give the client (CLOUD_TASKS_ENDPOINT)."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def wait_idle(self, seconds: float) -> bool:
        """Wait until every task succeeded or ran out of attempts; False if time ran out."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self._lock:
                busy = [t for t in self.tasks.values()
                        if (not t.statuses or t.statuses[-1] >= 300)
                        and len(t.statuses) < self.retries.attempts]
            if not busy:
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop serving and running tasks."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def _create(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task = body.get("task") or {}
        name = str(task.get("name", ""))
        parent = path.split("?", 1)[0].removeprefix("/v2/").removesuffix("/tasks")
        with self._lock:
            self.creates += 1
            if self.fail_creates > 0:
                self.fail_creates -= 1
                return 503, {"error": {"code": 503, "message": "unavailable",
                                       "status": "UNAVAILABLE"}}
            if not name.startswith(parent + "/tasks/"):
                return 400, {"error": {"code": 400, "message": "bad task name",
                                       "status": "INVALID_ARGUMENT"}}
            if name in self.tasks:
                return 409, {"error": {"code": 409, "message": "Requested entity already exists",
                                       "status": "ALREADY_EXISTS"}}
            http = task["httpRequest"]
            run_at = datetime.fromisoformat(task["scheduleTime"].replace("Z", "+00:00"))
            self.tasks[name] = FakeTask(name, http["url"], dict(http.get("headers") or {}),
                                        base64.b64decode(http.get("body", "")),
                                        run_at.timestamp())
        return 200, {"name": name, "scheduleTime": task["scheduleTime"]}

    def _dispatch(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                due = [t for t in self.tasks.values() if t.run_at <= time.time()
                       and (not t.statuses or t.statuses[-1] >= 300)
                       and len(t.statuses) < self.retries.attempts]
            for task in due:
                try:
                    # As Cloud Tasks does: how often this task was tried before.
                    headers = {**task.headers,
                               "X-CloudTasks-TaskRetryCount": str(len(task.statuses))}
                    status = requests.post(task.url, data=task.body, headers=headers,
                                           timeout=30).status_code
                except requests.RequestException:
                    status = 599
                with self._lock:
                    task.statuses.append(status)
                    task.run_at = time.time() + self.retries.delay(len(task.statuses))
