"""The payment gateway port, and its HTTP implementation.

Every call carries an idempotency key derived from the command, because a replayed
batch repeats its calls: the gateway answers a repeated key with its first answer and
creates nothing new (DESIGN.md §5.6).
"""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import quote
from uuid import UUID, uuid5

from clients.http import ResilientHttp
from domain.errors import TransientError
from domain.model import AuthorizationAnswer

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Server errors, rate limiting, timeouts and refused credentials (which get rotated) may
# pass: the command waits. Any other 4xx refuses this request for good.
_TRANSIENT_STATUSES = frozenset({401, 403, 408, 425, 429, 500, 502, 503, 504})


def idempotency_key(command_id: UUID, operation: str) -> str:
    """The same command and operation always give the same key, on any worker."""
    return str(uuid5(command_id, f"gateway:{operation}"))


class PaymentGateway(Protocol):
    """What the worker needs from a payment gateway."""

    def create_customer(self, *, name: str, email: str, idempotency_key: str) -> str: ...

    def attach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None: ...

    def detach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None: ...

    def delete_customer(self, *, customer_id: str, idempotency_key: str) -> None: ...

    def authorize(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        gateway_token: str,
        idempotency_key: str,
        customer_id: str | None = None,
        email: str | None = None,
    ) -> AuthorizationAnswer: ...


class GatewayProtocolError(TransientError):
    """The gateway answered something this client does not understand.

    Treated as an outage, not as poison: the command waits until the gateway behaves.
    """


class GatewayRefusedRequest(Exception):
    """The gateway refused this request (a 4xx that retrying cannot change).

    For a customer record or a card to save, the command is rejected
    (``gateway_refused``); for a card or customer to remove, there is nothing left to do.
    """


def _identifier(value: object, fallback: str) -> str:
    """A gateway-chosen code or id, made safe for our events (printable, bounded)."""
    text = re.sub(r"[^A-Za-z0-9._:@-]+", "_", str(value or "")).strip("_")[:64]
    return text or fallback


class HttpGateway:
    """The gateway over HTTP; ``http`` brings TLS, auth, retries and the circuit breaker."""

    def __init__(self, http: ResilientHttp) -> None:
        self._http = http

    def create_customer(self, *, name: str, email: str, idempotency_key: str) -> str:
        body = self._post("/v1/customers", {"name": name, "email": email}, idempotency_key)
        customer_id = body.get("id")
        if not isinstance(customer_id, str) or not customer_id:
            raise GatewayProtocolError("customer created without an id")
        return customer_id

    def attach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None:
        self._post(
            f"/v1/customers/{quote(customer_id, safe='')}/payment-methods",
            {"token": gateway_token},
            idempotency_key,
        )

    def detach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None:
        self._post(
            f"/v1/customers/{quote(customer_id, safe='')}/payment-methods/detach",
            {"token": gateway_token},
            idempotency_key,
        )

    def delete_customer(self, *, customer_id: str, idempotency_key: str) -> None:
        self._post(f"/v1/customers/{quote(customer_id, safe='')}/delete", {}, idempotency_key)

    def authorize(
        self,
        *,
        payment_id: str,
        amount: int,
        currency: str,
        gateway_token: str,
        idempotency_key: str,
        customer_id: str | None = None,
        email: str | None = None,
    ) -> AuthorizationAnswer:
        fraud_data = {"email": email} if email else {}
        try:
            body = self._post(
                "/v1/authorizations",
                {
                    "reference": payment_id,
                    "amount": amount,
                    "currency": currency,
                    "token": gateway_token,
                    "customer": customer_id,
                    **fraud_data,
                },
                idempotency_key,
            )
        except GatewayRefusedRequest:
            # e.g. a token the gateway does not know: a decline, not a reason to wait.
            return AuthorizationAnswer(approved=False, decline_code="gateway_refused_request")
        status = body.get("status")
        authorization_id = body.get("id")
        if status == "approved" and isinstance(authorization_id, str) and authorization_id:
            return AuthorizationAnswer(
                approved=True, authorization_id=_identifier(authorization_id, "approved")
            )
        if status == "declined":
            return AuthorizationAnswer(
                approved=False, decline_code=_identifier(body.get("declineCode"), "declined")
            )
        raise GatewayProtocolError(f"unexpected authorization status {status!r}")

    def _post(self, path: str, payload: dict[str, object], key: str) -> dict[str, object]:
        # Retried with the same key on timeouts and 5xx: the gateway dedups repeats.
        response = self._http.request("POST", path, json=payload, headers={IDEMPOTENCY_HEADER: key})
        if response.status_code in _TRANSIENT_STATUSES:
            raise TransientError(f"gateway answered {response.status_code}")
        if response.status_code >= 400:
            raise GatewayRefusedRequest(f"gateway refused {path}: {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise GatewayProtocolError(f"gateway sent no JSON for {path}") from None
        if not isinstance(answer, dict):
            raise GatewayProtocolError(f"gateway sent no object for {path}")
        return answer
