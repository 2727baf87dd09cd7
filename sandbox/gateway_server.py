"""A sandbox payment gateway: real HTTP, deterministic answers, idempotency keys honoured.

Behaviour by token, so tests and demos can choose an outcome:
- a token containing ``decline``  → declined (``insufficient_funds``);
- a token containing ``unavailable`` → 503 every time (a gateway outage);
- a token containing ``slow`` → the first answer for a key comes after the client's
  timeout (the call took effect; the retry with the same key must not repeat it);
- anything else → approved.
A repeated ``Idempotency-Key`` returns the first answer and creates nothing; the same key
with a different body is refused (422), as real gateways do.
``GET /v1/_sandbox/stats`` tells how many authorizations were created and replayed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from http import HTTPStatus
from typing import Any

from sandbox.json_server import JsonServer

SLOW_ANSWER_SECONDS = 3.0


class SandboxGateway:
    """The gateway's state; thread-safe, in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self.authorizations: dict[str, dict[str, Any]] = {}
        # Customer id -> attached tokens. Names and emails are checked, never kept.
        self.customers: dict[str, set[str]] = {}
        self.deleted_customers = 0
        self.replays = 0
        self.requests = 0
        self.available = True

    def handle(
        self, method: str, path: str, key: str | None, body: bytes
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            if path == "/v1/_sandbox/stats" and method == "GET":
                return HTTPStatus.OK, self.stats()
            if not self.available:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "sandbox outage"}
            if key is None:
                return HTTPStatus.BAD_REQUEST, {"error": "Idempotency-Key header is required"}
            fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).hexdigest()
            if key in self._answers:
                seen_fingerprint, status, answer = self._answers[key]
                if seen_fingerprint != fingerprint:
                    return HTTPStatus.UNPROCESSABLE_ENTITY, {
                        "error": "key reused with another body"
                    }
                self.replays += 1
                return status, answer
            status, answer = self._route(method, path, json.loads(body or b"{}"))
            if status < 500:
                self._answers[key] = (fingerprint, status, answer)
            slow = b"slow" in body
        if slow:
            # The answer is stored but arrives too late: the client times out, retries
            # with the same key and gets the stored answer, with nothing created twice.
            time.sleep(SLOW_ANSWER_SECONDS)
        return status, answer

    def _route(self, method: str, path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if method == "POST" and path == "/v1/authorizations":
            token = str(request.get("token", ""))
            if "unavailable" in token:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "issuer unavailable"}
            authorization_id = f"auth_{uuid.uuid4().hex[:20]}"
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
            customer_id = f"cus_{uuid.uuid4().hex[:20]}"
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

    def stats(self) -> dict[str, Any]:
        return {
            "authorizations": len(self.authorizations),
            "customers": len(self.customers),
            "attachedTokens": sum(len(tokens) for tokens in self.customers.values()),
            "deletedCustomers": self.deleted_customers,
            "replays": self.replays,
        }


class SandboxGatewayServer(JsonServer):
    """The sandbox on a loopback port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = SandboxGateway()
        super().__init__(
            lambda method, path, headers, body: self.gateway.handle(
                method, path, headers.get("Idempotency-Key"), body
            ),
            host,
            port,
        )
