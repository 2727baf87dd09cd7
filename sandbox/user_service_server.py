"""A User Service stand-in: ``GET /v1/users/{userId}/profile`` over real HTTP.

Every user exists, with a made-up name and email derived from the id, except ids that
start with ``unknown-`` (404). ``available = False`` simulates an outage (503).
``calls`` counts lookups, to check the worker's cache; ``GET /v1/_sandbox/stats`` tells
it and the server's counters. ``answer_delay_seconds`` holds every answer back that long
(without a thread: ``sandbox.json_server``).
"""

from __future__ import annotations

import threading
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from sandbox.json_server import Answer, JsonServer

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

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, answer_delay_seconds: float = 0.0
    ) -> None:
        if answer_delay_seconds < 0:
            raise ValueError("answer_delay_seconds must be >= 0")
        self.stub = UserServiceStub()
        # May be changed while serving; applies to the requests that arrive afterwards.
        self.answer_delay_seconds = answer_delay_seconds
        super().__init__(self._answer, host, port)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v1/_sandbox/stats" and method == "GET":
            return Answer(HTTPStatus.OK, {"calls": self.stub.calls, **self.counters.as_json()})
        status, answer = self.stub.handle(path)
        return Answer(status, answer, self.answer_delay_seconds)
