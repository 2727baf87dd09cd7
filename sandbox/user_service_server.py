"""A User Service stand-in: ``GET /v1/users/{userId}/profile`` over real HTTP.

Every user exists, with a made-up name and email derived from the id, except ids that
start with ``unknown-`` (404). ``available = False`` simulates an outage (503). Scripted
faults (``sandbox.faults``: ``add_faults`` or ``/v1/_sandbox/faults``) answer chosen
requests with a 400, 401, 500, a profile with ``"email": null``, ``<html>``...
``calls`` counts profile requests (faulted ones too), to check the worker's cache;
``GET /v1/_sandbox/stats`` tells it and the server's counters. ``answer_delay_seconds``
holds every answer back that long (without a thread: ``sandbox.json_server``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from sandbox.faults import FaultRule, Faults
from sandbox.json_server import Answer, JsonServer

_PREFIX = "/v1/users/"
_SUFFIX = "/profile"
_CONTROL = "/v1/_sandbox/"


class UserServiceStub:
    """The stand-in's state: its counter, its availability and its faults; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.available = True
        self.faults = Faults()

    def add_faults(self, rules: Iterable[FaultRule]) -> None:
        """Appends scripted faults (``sandbox.faults``); they apply to the next requests."""
        self.faults.add(rules)

    def clear_faults(self) -> None:
        self.faults.clear()

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

    def answer(self, method: str, path: str, body: bytes, delay: float) -> Answer:
        """The answer to one request: a scripted fault's, or the profile after ``delay``."""
        rule = self.faults.take(method, path, body)
        if rule is None:
            status, answer = self.handle(path)
            return Answer(status, answer, delay)
        if rule.effect:
            self.handle(path)
        else:
            with self._lock:
                self.calls += 1
        return rule.answer()


class UserServiceStubServer(JsonServer):
    """The stub on a loopback port; ``stub``: the state to serve (default: a new one)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        answer_delay_seconds: float = 0.0,
        stub: UserServiceStub | None = None,
    ) -> None:
        if answer_delay_seconds < 0:
            raise ValueError("answer_delay_seconds must be >= 0")
        self.stub = UserServiceStub() if stub is None else stub
        # May be changed while serving; applies to the requests that arrive afterwards.
        self.answer_delay_seconds = answer_delay_seconds
        super().__init__(self._answer, host, port)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith(_CONTROL):
            name = path[len(_CONTROL) :]
            if name == "faults":
                return self.stub.faults.endpoint(method, body)
            if method == "GET" and name == "stats":
                stats = {
                    "calls": self.stub.calls,
                    "faultsAnswered": self.stub.faults.answered,
                    **self.counters.as_json(),
                }
                return Answer(HTTPStatus.OK, stats)
            return Answer(HTTPStatus.NOT_FOUND, {"error": f"no sandbox route {method} {name}"})
        return self.stub.answer(method, path, body, self.answer_delay_seconds)
