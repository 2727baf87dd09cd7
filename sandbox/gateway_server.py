"""A sandbox payment gateway: real HTTP, deterministic answers, idempotency keys honoured.

Behaviour by token, so tests and demos can choose an outcome:
- a token containing ``decline``  → declined (``insufficient_funds``);
- a token containing ``unavailable`` → 503 every time (a gateway outage);
- a token containing ``slow`` → the first answer for a key comes after the client's
  timeout (the call took effect; the retry with the same key must not repeat it);
- a token containing ``wait<N>ms`` (e.g. ``tok_wait00250ms_x``) → the first answer for a
  key comes after N milliseconds (calls of different lengths, to test their overlap);
- anything else → approved.
A repeated ``Idempotency-Key`` returns the first answer and creates nothing; the same key
with a different body is refused (422), as real gateways do.
``GET /v1/_sandbox/stats`` tells how many authorizations were created and replayed, and
how many requests the server answered and held back at once.

``answer_delay_seconds`` makes every call's answer come that long after the request (the
call takes effect at once): a gateway far away. Waiting answers hold a timer each, not a
thread (``sandbox.json_server``), so thousands of calls can wait together.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import secrets
import threading
from http import HTTPStatus
from typing import Any

from sandbox.json_server import Answer, JsonServer

SLOW_ANSWER_SECONDS = 3.0
_WAIT = re.compile(rb"wait(\d{1,6})ms")


class SandboxGateway:
    """The gateway's state; thread-safe, in memory."""

    def __init__(self, answer_delay_seconds: float = 0.0) -> None:
        if answer_delay_seconds < 0:
            raise ValueError("answer_delay_seconds must be >= 0")
        # May be changed while serving; applies to the requests that arrive afterwards.
        self.answer_delay_seconds = answer_delay_seconds
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[bytes, int, dict[str, Any]]] = {}
        self.authorizations: dict[str, dict[str, Any]] = {}
        # Customer id -> attached tokens. Names and emails are checked, never kept.
        self.customers: dict[str, set[str]] = {}
        self.deleted_customers = 0
        self.replays = 0
        self.requests = 0
        self.available = True
        # Ids are unique per gateway process and not guessable across runs; a counter is
        # cheaper than a uuid per call.
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count()

    def answer(self, method: str, path: str, key: str | None, body: bytes) -> Answer:
        """The answer to one request and how long to hold it back; the effect is immediate."""
        with self._lock:
            self.requests += 1
            if path == "/v1/_sandbox/stats" and method == "GET":
                return Answer(HTTPStatus.OK, self.stats())
            delay = self.answer_delay_seconds
            if not self.available:
                return Answer(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "sandbox outage"}, delay)
            if key is None:
                return Answer(
                    HTTPStatus.BAD_REQUEST,
                    {"error": "Idempotency-Key header is required"},
                    delay,
                )
            fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).digest()
            if key in self._answers:
                seen_fingerprint, status, answer = self._answers[key]
                if seen_fingerprint != fingerprint:
                    return Answer(
                        HTTPStatus.UNPROCESSABLE_ENTITY,
                        {"error": "key reused with another body"},
                        delay,
                    )
                self.replays += 1
                return Answer(status, answer, delay)
            status, answer = self._route(method, path, json.loads(body or b"{}"))
            if status < 500:
                self._answers[key] = (fingerprint, status, answer)
        if b"slow" in body:
            # The answer is stored but arrives too late: the client times out, retries
            # with the same key and gets the stored answer, with nothing created twice.
            delay = max(delay, SLOW_ANSWER_SECONDS)
        wait = _WAIT.search(body)
        if wait is not None:
            delay = max(delay, int(wait.group(1)) / 1000)
        return Answer(status, answer, delay)

    def _route(self, method: str, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/authorizations":
            token = str(request.get("token", ""))
            if "unavailable" in token:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "issuer unavailable"}
            authorization_id = self._new_id("auth")
            if "decline" in token:
                answer = {
                    "id": authorization_id,
                    "status": "declined",
                    "declineCode": "insufficient_funds",
                }
            else:
                answer = {"id": authorization_id, "status": "approved"}
            self.authorizations[authorization_id] = {
                "reference": request.get("reference"),
                "customer": request.get("customer"),
                **answer,
            }
            return HTTPStatus.CREATED, answer
        if method == "POST" and path == "/v1/customers":
            if not request.get("name") or "@" not in str(request.get("email", "")):
                return HTTPStatus.BAD_REQUEST, {"error": "name and email are required"}
            customer_id = self._new_id("cus")
            self.customers[customer_id] = set()
            return HTTPStatus.CREATED, {"id": customer_id}
        parts = path.strip("/").split("/")
        if method == "POST" and len(parts) >= 4 and parts[:2] == ["v1", "customers"]:
            tokens = self.customers.get(parts[2])
            if tokens is None:
                return HTTPStatus.NOT_FOUND, {"error": "no such customer"}
            action = "/".join(parts[3:])
            if action == "payment-methods":
                tokens.add(str(request.get("token")))
                return HTTPStatus.CREATED, {"attached": True}
            if action == "payment-methods/detach":
                tokens.discard(str(request.get("token")))
                return HTTPStatus.OK, {"detached": True}
            if action == "delete":
                del self.customers[parts[2]]
                self.deleted_customers += 1
                return HTTPStatus.OK, {"deleted": True}
        return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}

    def _new_id(self, kind: str) -> str:
        return f"{kind}_{self._id_prefix}{next(self._ids):08x}"

    def stats(self) -> dict[str, Any]:
        return {
            "authorizations": len(self.authorizations),
            "customers": len(self.customers),
            "attachedTokens": sum(len(tokens) for tokens in self.customers.values()),
            "deletedCustomers": self.deleted_customers,
            "replays": self.replays,
        }


class SandboxGatewayServer(JsonServer):
    """The sandbox on a loopback port; ``/v1/_sandbox/stats`` adds the server's counters."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, answer_delay_seconds: float = 0.0
    ) -> None:
        self.gateway = SandboxGateway(answer_delay_seconds)
        super().__init__(self._answer, host, port)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path == "/v1/_sandbox/stats" and method == "GET":
            return Answer(HTTPStatus.OK, {**self.gateway.stats(), **self.counters.as_json()})
        return self.gateway.answer(method, path, headers.get("idempotency-key"), body)
