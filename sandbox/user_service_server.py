"""A User Service stand-in: ``GET /v1/users/{userId}/profile`` over real HTTP.

Every user exists, with a made-up name and email derived from the id, except ids that
start with ``unknown-`` (404). ``available = False`` simulates an outage (503).
``calls`` counts lookups, to check the worker's cache.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

_PREFIX = "/v1/users/"
_SUFFIX = "/profile"


class UserServiceStub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.available = True

    def handle(self, path: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.calls += 1
        if not self.available:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "stub outage"}
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return HTTPStatus.NOT_FOUND, {"error": "no route"}
        user_id = unquote(path[len(_PREFIX) : -len(_SUFFIX)])
        if user_id.startswith("unknown-"):
            return HTTPStatus.NOT_FOUND, {"error": "no such user"}
        return HTTPStatus.OK, {
            "userId": user_id,
            "name": f"Profile Name {user_id}",
            "email": f"{user_id}@profiles.example",
            "phone": "+00 000 0000",  # more than the worker keeps
        }


class UserServiceStubServer:
    """The stub on a loopback port, in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stub = UserServiceStub()
        stub = self.stub

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = stub.handle(self.path)
                encoded = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(encoded)))
                self.end_headers()
                self.wfile.write(encoded)

            def log_message(self, format: str, *args: Any) -> None:
                return  # paths carry user ids: log nothing

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> UserServiceStubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()
