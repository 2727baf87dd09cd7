"""A User Service stand-in: ``GET /v1/users/{userId}/profile`` over real HTTP.

Every user exists, with a made-up name and email derived from the id, except ids that
start with ``unknown-`` (404). ``available = False`` simulates an outage (503).
``calls`` counts lookups, to check the worker's cache.
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from sandbox.json_server import JsonServer

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


class UserServiceStubServer(JsonServer):
    """The stub on a loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stub = UserServiceStub()
        super().__init__(lambda method, path, headers, body: self.stub.handle(path), host, port)
