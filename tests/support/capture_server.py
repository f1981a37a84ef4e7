"""A stand-in for Mixpanel's ingestion API: records every POST to /track and /engage.

A real HTTP server on 127.0.0.1, so the mixpanel package's own HTTP client is exercised.
It answers like Mixpanel ({"status": 1}), or fails or stalls when told to.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class CaptureServer:
    """Records requests: ``requests`` holds (path, decoded messages, raw body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, list[dict[str, Any]], str]] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each request, in the order of ``requests``."""
        self.delay = 0.0
        self.status = 200
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if server.delay:
                    time.sleep(server.delay)
                data = parse_qs(body).get("data", ["[]"])[0]
                with server._lock:
                    server.requests.append((self.path, json.loads(data), body))
                    server.headers.append(dict(self.headers))
                answer = json.dumps({"status": 1, "error": None}).encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for path, batch, _ in self.requests if path == "/track" for m in batch]

    def people(self) -> list[dict[str, Any]]:
        with self._lock:
            return [m for path, batch, _ in self.requests if path == "/engage" for m in batch]

    def raw(self) -> str:
        with self._lock:
            return "\n".join(body for _, _, body in self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
