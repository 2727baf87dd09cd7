"""A sandbox payment gateway: real HTTP, deterministic answers, idempotency keys honoured.

Requests (every POST needs an ``Idempotency-Key``): ``POST /v1/customers``
``{"reference"}``; ``POST /v1/customers/{id}`` ``{"name", "email"}`` (checked, never kept:
only ``hasProfile``); ``.../payment-methods``, ``.../payment-methods/detach``,
``.../delete``; ``POST /v1/authorizations``; ``POST /v1/authorizations/cancel``
``{"requestKey", "reference"}`` (a technical void by the authorize request's key: an
approved authorization becomes ``voided``; with none yet, the key is tombstoned and a later
authorize with it is declined ``cancelled``).

Idempotency as real gateways do it: a repeated key with the same method, path and body
gets the first answer and creates nothing (answers >= 500 are not kept); with another body
422; while a request with the key has a delayed answer to come, 409 (until the answer is
written or due, also when its client gave up; a stopped server's answers are lost).

Behaviour by token: ``decline`` → declined ``insufficient_funds``; ``unavailable`` → 503;
``slow`` → the first answer comes after ``SLOW_ANSWER_SECONDS`` (after the client's
timeout); ``wait<N>ms`` (e.g. ``tok_wait00250ms_x``) → after N ms; else approved.
``answer_delay_seconds`` delays every answer (a gateway far away); a waiting answer holds
a timer, not a thread (``sandbox.json_server``).

``/v1/_sandbox/``: ``stats`` (counts and the server's counters), ``records`` (what the
gateway holds, ``SandboxGateway.records``), ``faults`` (``sandbox.faults``). The state is a
``SandboxGateway``; ``SandboxGatewayServer(..., gateway=state)`` serves an existing one, so
a server can be stopped and another started on its port with the same records.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from sandbox.faults import FaultRule, Faults
from sandbox.json_server import Answer, JsonServer

SLOW_ANSWER_SECONDS = 3.0
_WAIT = re.compile(rb"wait(\d{1,6})ms")
_CUSTOMERS = "/v1/customers"
_AUTHORIZATIONS = "/v1/authorizations"
_CANCEL = "/v1/authorizations/cancel"
_CONTROL = "/v1/_sandbox/"


@dataclass
class Customer:
    """A live customer; its name and email are checked when given, never kept."""

    id: str
    reference: str | None
    has_profile: bool = False
    tokens: dict[str, None] = field(default_factory=dict)  # attached tokens, in order

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reference": self.reference,
            "hasProfile": self.has_profile,
            "tokens": list(self.tokens),
        }


def _valid_profile(request: dict[str, Any]) -> bool:
    name, email = request.get("name"), request.get("email")
    return isinstance(name, str) and bool(name.strip()) and isinstance(email, str) and "@" in email


class SandboxGateway:
    """The gateway's state (records, stored answers, tombstones, faults); thread-safe."""

    def __init__(self, answer_delay_seconds: float = 0.0) -> None:
        if answer_delay_seconds < 0:
            raise ValueError("answer_delay_seconds must be >= 0")
        # May be changed while serving; applies to the requests that arrive afterwards.
        self.answer_delay_seconds = answer_delay_seconds
        self.available = True  # False: every request is answered 503 (an outage)
        self.faults = Faults()
        self._lock = threading.Lock()
        # Idempotency key -> (fingerprint of method, path and body; status; answer).
        self._answers: dict[str, tuple[bytes, int, dict[str, Any]]] = {}
        # Keys with a delayed answer still to come (409 meanwhile) -> who holds them.
        self._in_flight: dict[str, object] = {}
        # Authorization id -> its record (``records()["authorizations"]``).
        self.authorizations: dict[str, dict[str, Any]] = {}
        self._authorization_by_key: dict[str, str] = {}
        self._tombstones: set[str] = set()  # authorize keys cancelled before any authorize
        self.cancellations: list[dict[str, Any]] = []
        self.customers: dict[str, Customer] = {}
        self.deleted: list[dict[str, Any]] = []
        self.replays = 0
        self.requests = 0
        # Ids are unique per gateway state and not guessable across runs; a counter is
        # cheaper than a uuid per call.
        self._id_prefix = secrets.token_hex(6)
        self._ids = itertools.count()

    @property
    def deleted_customers(self) -> int:
        return len(self.deleted)

    def add_faults(self, rules: Iterable[FaultRule]) -> None:
        """Appends scripted faults (``sandbox.faults``); they apply to the next requests."""
        self.faults.add(rules)

    def clear_faults(self) -> None:
        self.faults.clear()

    def answer(self, method: str, path: str, key: str | None, body: bytes) -> Answer:
        """The answer to one request and how long to hold it back; the effect is immediate."""
        rule = self.faults.take(method, path, body)
        if rule is not None and not rule.effect:
            with self._lock:
                self.requests += 1
            return rule.answer()  # the gateway never saw the request
        with self._lock:
            self.requests += 1
            status, answer, delay, holds = self._respond(method, path, key, body)
            if rule is not None:
                delay = rule.delay_seconds
            done = None
            if holds and delay > 0 and key is not None:
                # The key is in flight until this answer is written (or was due).
                holder = object()
                self._in_flight[key] = holder
                done = functools.partial(self._release, key, holder)
        if rule is not None:
            return rule.answer(done)
        return Answer(status, answer, delay, None, done)

    def _release(self, key: str, holder: object) -> None:
        with self._lock:
            if self._in_flight.get(key) is holder:
                del self._in_flight[key]

    def _respond(
        self, method: str, path: str, key: str | None, body: bytes
    ) -> tuple[int, dict[str, Any], float, bool]:
        """Under the lock: the effect of one request, its answer, its delay, and whether it
        holds its key while the answer waits (the first request or a replay does)."""
        delay = self.answer_delay_seconds
        if not self.available:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "sandbox outage"}, delay, False
        if key is None:
            error = {"error": "Idempotency-Key header is required"}
            return HTTPStatus.BAD_REQUEST, error, delay, False
        if key in self._in_flight:
            error = {"error": "request with this key in progress"}
            return HTTPStatus.CONFLICT, error, delay, False
        fingerprint = hashlib.sha256(f"{method} {path} ".encode() + body).digest()
        stored = self._answers.get(key)
        if stored is not None:
            seen_fingerprint, status, answer = stored
            if seen_fingerprint != fingerprint:
                error = {"error": "key reused with another body"}
                return HTTPStatus.UNPROCESSABLE_ENTITY, error, delay, False
            self.replays += 1
            return status, answer, delay, True
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = None
        if isinstance(request, dict):
            status, answer = self._route(method, path, key, request)
        else:
            status, answer = HTTPStatus.BAD_REQUEST, {"error": "the body is not a JSON object"}
        if status < 500:
            self._answers[key] = (fingerprint, status, answer)
        if b"slow" in body:
            # The answer is stored but arrives too late: the client times out, retries
            # with the same key (409 until the answer was due) and gets the stored
            # answer, with nothing created twice.
            delay = max(delay, SLOW_ANSWER_SECONDS)
        wait = _WAIT.search(body)
        if wait is not None:
            delay = max(delay, int(wait.group(1)) / 1000)
        return status, answer, delay, True

    def _route(
        self, method: str, path: str, key: str, request: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if method != "POST":
            return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}
        if path == _AUTHORIZATIONS:
            return self._authorize(key, request)
        if path == _CANCEL:
            return self._cancel(request)
        if path == _CUSTOMERS:
            return self._create_customer(request)
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[:2] == ["v1", "customers"]:
            return self._change_customer(parts[2], "/".join(parts[3:]), request)
        return HTTPStatus.NOT_FOUND, {"error": f"no route {method} {path}"}

    def _authorize(self, key: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        token = str(request.get("token", ""))
        cancelled = key in self._tombstones
        if not cancelled and "unavailable" in token:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "issuer unavailable"}
        authorization_id = self._new_id("auth")
        answer: dict[str, Any] = {"id": authorization_id, "status": "approved"}
        if cancelled:
            answer = {"id": authorization_id, "status": "declined", "declineCode": "cancelled"}
        elif "decline" in token:
            answer = {
                "id": authorization_id,
                "status": "declined",
                "declineCode": "insufficient_funds",
            }
        self.authorizations[authorization_id] = {
            "id": authorization_id,
            "requestKey": key,
            "reference": request.get("reference"),
            "status": answer["status"],
            "declineCode": answer.get("declineCode"),
            "customer": request.get("customer"),
            "amount": request.get("amount"),
            "currency": request.get("currency"),
            "token": request.get("token"),
        }
        self._authorization_by_key[key] = authorization_id
        return HTTPStatus.CREATED, answer

    def _cancel(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        request_key = request.get("requestKey")
        if not isinstance(request_key, str) or not request_key:
            return HTTPStatus.BAD_REQUEST, {"error": "requestKey is required"}
        authorization_id = self._authorization_by_key.get(request_key)
        if authorization_id is None:
            self._tombstones.add(request_key)
        else:
            record = self.authorizations[authorization_id]
            if record["status"] == "approved":
                record["status"] = "voided"
        self.cancellations.append(
            {
                "requestKey": request_key,
                "reference": request.get("reference"),
                "authorization": authorization_id,
            }
        )
        return HTTPStatus.OK, {"cancelled": True, "authorization": authorization_id}

    def _create_customer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        # A profile in the create request (the older flow) is checked the same way.
        with_profile = "name" in request or "email" in request
        if with_profile and not _valid_profile(request):
            return HTTPStatus.BAD_REQUEST, {"error": "name and email are required"}
        reference = request.get("reference")
        customer_id = self._new_id("cus")
        self.customers[customer_id] = Customer(
            customer_id, None if reference is None else str(reference), with_profile
        )
        return HTTPStatus.CREATED, {"id": customer_id}

    def _change_customer(
        self, customer_id: str, action: str, request: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        customer = self.customers.get(customer_id)
        if action not in ("", "payment-methods", "payment-methods/detach", "delete"):
            return HTTPStatus.NOT_FOUND, {"error": f"no route {action}"}
        if customer is None:
            return HTTPStatus.NOT_FOUND, {"error": "no such customer"}
        if action == "":
            if not _valid_profile(request):
                return HTTPStatus.BAD_REQUEST, {"error": "a name and an email with @ are required"}
            customer.has_profile = True
            return HTTPStatus.OK, {"id": customer_id}
        if action == "payment-methods":
            customer.tokens[str(request.get("token"))] = None
            return HTTPStatus.CREATED, {"attached": True}
        if action == "payment-methods/detach":
            customer.tokens.pop(str(request.get("token")), None)
            return HTTPStatus.OK, {"detached": True}
        del self.customers[customer_id]
        self.deleted.append({"id": customer_id, "reference": customer.reference})
        return HTTPStatus.OK, {"deleted": True}

    def _new_id(self, kind: str) -> str:
        return f"{kind}_{self._id_prefix}{next(self._ids):08x}"

    def records(self) -> dict[str, Any]:
        """What the gateway holds (``GET /v1/_sandbox/records``), as fresh JSON data."""
        with self._lock:
            return {
                "authorizations": [dict(record) for record in self.authorizations.values()],
                "customers": [customer.as_json() for customer in self.customers.values()],
                "deletedCustomers": [dict(record) for record in self.deleted],
                "cancellations": [dict(record) for record in self.cancellations],
            }

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "authorizations": len(self.authorizations),
                "customers": len(self.customers),
                "attachedTokens": sum(len(c.tokens) for c in self.customers.values()),
                "deletedCustomers": len(self.deleted),
                "cancellations": len(self.cancellations),
                "replays": self.replays,
                "faultsAnswered": self.faults.answered,
            }


class SandboxGatewayServer(JsonServer):
    """The sandbox on a loopback port; ``/v1/_sandbox/stats`` adds the server's counters.

    ``gateway``: the state to serve (default: a new one). ``answer_delay_seconds``, when
    given, is set on it.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        answer_delay_seconds: float | None = None,
        gateway: SandboxGateway | None = None,
    ) -> None:
        if gateway is None:
            gateway = SandboxGateway(answer_delay_seconds or 0.0)
        elif answer_delay_seconds is not None:
            if answer_delay_seconds < 0:
                raise ValueError("answer_delay_seconds must be >= 0")
            gateway.answer_delay_seconds = answer_delay_seconds
        self.gateway = gateway
        super().__init__(self._answer, host, port)

    def _answer(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if path.startswith(_CONTROL):
            return self._control(method, path[len(_CONTROL) :], body)
        return self.gateway.answer(method, path, headers.get("idempotency-key"), body)

    def _control(self, method: str, name: str, body: bytes) -> Answer:
        if name == "faults":
            return self.gateway.faults.endpoint(method, body)
        if method == "GET" and name == "stats":
            return Answer(HTTPStatus.OK, {**self.gateway.stats(), **self.counters.as_json()})
        if method == "GET" and name == "records":
            return Answer(HTTPStatus.OK, self.gateway.records())
        return Answer(HTTPStatus.NOT_FOUND, {"error": f"no sandbox route {method} {name}"})
