"""The payment gateway port, and its HTTP implementation.

Every call carries an idempotency key derived from the command, because a replayed
batch repeats its calls: the gateway answers a repeated key with its first answer and
creates nothing new (DESIGN.md §5.6). Every request body is a function of the command and
the key's stored state only, so a replay is byte for byte the first request and can never
be refused as "the same key with another body". The one input that is not (a profile from
the User Service) is sent in a call that is harmless to repeat (``set_customer_profile``),
under a key that includes it.

How each answer is taken (the README's table of answers, section 7):

- 2xx: done. A body is read only where the worker needs something from it.
- 408, 409, 425, 429, 5xx, timeouts: retried within the call's budget, then
  ``TransientError`` (the key waits and is retried with the same idempotency keys). 409 (a
  request with this key is still in flight) is the gateway answering: no breaker failure.
- 401, 403: ``TransientError``; the circuit breaker counts them as failures.
- 404: ``GatewayNotFound`` (for a removal: already gone).
- 422: ``GatewayKeyConflict``: the gateway holds another request under this key.
- another 4xx: ``GatewayRefusedRequest``, final.
- anything else, or a body without what the contract promises: ``GatewayProtocolError``,
  final (a repeat with the same key gets the same answer).
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol
from urllib.parse import quote
from uuid import UUID, uuid5

from clients.http import HttpResponse, ResilientHttp, ServiceUnavailable
from domain.errors import FinalAnswer, TransientError
from domain.model import AuthorizationAnswer
from telemetry.metrics import ADVERSE_ANSWERS

SERVICE_NAME = "gateway"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Retried within a call's budget; then the call fails transiently and the key waits.
_RETRIED_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_BUSY_STATUSES = frozenset({409})
_UNAUTHORIZED_STATUSES = frozenset({401, 403})


def idempotency_key(command_id: UUID, operation: str) -> str:
    """The same command and operation always give the same key, on any worker."""
    return str(uuid5(command_id, f"gateway:{operation}"))


def profile_key(command_id: UUID, name: str, email: str) -> str:
    """The key of a ``set_customer_profile`` call: the same profile, the same key; a
    profile that changed between two tries gets its own key (setting it is harmless)."""
    digest = hashlib.sha256(f"{name}\0{email}".encode()).hexdigest()[:32]
    return idempotency_key(command_id, f"set-customer-profile:{digest}")


class GatewayError(FinalAnswer):
    """A gateway answer that retrying with the same key cannot change."""


class GatewayRefusedRequest(GatewayError):
    """The gateway refused this request (a 4xx other than 404 and 422): final.

    For a customer record or a card to save, the command is rejected (``gateway_refused``);
    for an authorization, it is a decline.
    """


class GatewayNotFound(GatewayRefusedRequest):
    """404: the customer (or the card on it) does not exist at the gateway."""


class GatewayKeyConflict(GatewayError):
    """422: the gateway holds another request under this idempotency key, so what it did
    under the key is unknown to the worker."""


class GatewayProtocolError(GatewayError):
    """The gateway answered something its contract does not allow (a status, a body)."""


class PaymentGateway(Protocol):
    """What the worker needs from a payment gateway."""

    def create_customer(self, *, reference: str, idempotency_key: str) -> str: ...

    def set_customer_profile(
        self, *, customer_id: str, name: str, email: str, idempotency_key: str
    ) -> None: ...

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

    def cancel_authorization(
        self, *, request_key: str, payment_id: str, idempotency_key: str
    ) -> bool: ...


class AuthorizationOutcomeUnknown(GatewayError):
    """The gateway's answer to an authorization does not say whether it authorized."""


def _identifier(value: object, fallback: str) -> str:
    """A gateway-chosen code or id, made safe for our events (printable, bounded)."""
    text = re.sub(r"[^A-Za-z0-9._:@-]+", "_", str(value or "")).strip("_")[:64]
    return text or fallback


class HttpGateway:
    """The gateway over HTTP; ``http`` brings TLS, auth, retries and the circuit breaker."""

    def __init__(self, http: ResilientHttp) -> None:
        self._http = http

    def create_customer(self, *, reference: str, idempotency_key: str) -> str:
        """A customer record holding no personal data yet: only our reference (a user id)."""
        response = self._post(
            "create_customer", "/v1/customers", {"reference": reference}, idempotency_key
        )
        body = _json(response, "create_customer")
        customer_id = body.get("id")
        if not isinstance(customer_id, str) or not customer_id:
            raise _unexpected("create_customer", "customer created without an id")
        return customer_id

    def set_customer_profile(
        self, *, customer_id: str, name: str, email: str, idempotency_key: str
    ) -> None:
        self._post(
            "set_customer_profile",
            f"/v1/customers/{quote(customer_id, safe='')}",
            {"name": name, "email": email},
            idempotency_key,
        )

    def attach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None:
        self._post(
            "attach",
            f"/v1/customers/{quote(customer_id, safe='')}/payment-methods",
            {"token": gateway_token},
            idempotency_key,
        )

    def detach_payment_method(
        self, *, customer_id: str, gateway_token: str, idempotency_key: str
    ) -> None:
        self._post(
            "detach",
            f"/v1/customers/{quote(customer_id, safe='')}/payment-methods/detach",
            {"token": gateway_token},
            idempotency_key,
        )

    def delete_customer(self, *, customer_id: str, idempotency_key: str) -> None:
        self._post(
            "delete_customer",
            f"/v1/customers/{quote(customer_id, safe='')}/delete",
            {},
            idempotency_key,
        )

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
        """Approved or declined; ``AuthorizationOutcomeUnknown`` when the answer says neither
        (a 422, a status such as ``pending``, a body that does not decode)."""
        fraud_data = {"email": email} if email else {}
        request: dict[str, object] = {
            "reference": payment_id,
            "amount": amount,
            "currency": currency,
            "token": gateway_token,
            "customer": customer_id,
            **fraud_data,
        }
        try:
            response = self._post("authorize", "/v1/authorizations", request, idempotency_key)
            body = _json(response, "authorize")
        except (GatewayKeyConflict, GatewayProtocolError) as unknown:
            raise AuthorizationOutcomeUnknown(str(unknown)) from None
        except GatewayRefusedRequest:
            # e.g. a token the gateway does not know: a 4xx creates nothing, a decline.
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
        ADVERSE_ANSWERS.labels(SERVICE_NAME, "authorize", "unexpected").inc()
        raise AuthorizationOutcomeUnknown(f"authorization status {_identifier(status, 'none')}")

    def cancel_authorization(
        self, *, request_key: str, payment_id: str, idempotency_key: str
    ) -> bool:
        """Void whatever the authorization request with ``request_key`` made (a technical
        cancel); True when there was an authorization. It must succeed: any answer but a
        2xx that says so is ``TransientError`` (the key waits, and the cancel is retried)."""
        try:
            response = self._post(
                "cancel_authorization",
                "/v1/authorizations/cancel",
                {"requestKey": request_key, "reference": payment_id},
                idempotency_key,
            )
            body = _json(response, "cancel_authorization")
        except GatewayError as error:
            raise TransientError(f"the gateway did not confirm a cancel: {error}") from None
        if body.get("cancelled") is not True:
            ADVERSE_ANSWERS.labels(SERVICE_NAME, "cancel_authorization", "unexpected").inc()
            raise TransientError("the gateway did not confirm a cancel")
        return body.get("authorization") is not None

    def _post(
        self, operation: str, path: str, payload: dict[str, object], key: str
    ) -> HttpResponse:
        # Retried with the same key on timeouts, 409, 429 and 5xx: the gateway dedups.
        try:
            response = self._http.request(
                "POST",
                path,
                json=payload,
                headers={IDEMPOTENCY_HEADER: key},
                retry_statuses=_RETRIED_STATUSES,
                busy_statuses=_BUSY_STATUSES,
            )
        except ServiceUnavailable as unavailable:
            if unavailable.reason == "http_409":
                ADVERSE_ANSWERS.labels(SERVICE_NAME, operation, "busy").inc()
            raise
        status = response.status_code
        if 200 <= status < 300:
            return response
        answer = _answer_kind(status)
        ADVERSE_ANSWERS.labels(SERVICE_NAME, operation, answer).inc()
        if answer == "unauthorized":
            raise TransientError(f"gateway answered {status} to {operation}")
        if answer == "not_found":
            raise GatewayNotFound(f"gateway: {operation}: 404")
        if answer == "key_conflict":
            raise GatewayKeyConflict(f"gateway: {operation}: 422")
        if answer == "refused":
            raise GatewayRefusedRequest(f"gateway refused {operation}: {status}")
        raise GatewayProtocolError(f"gateway: {operation}: unexpected status {status}")


def _answer_kind(status: int) -> str:
    """The label of a final status that is not a success (the retried ones never get here)."""
    if status in _UNAUTHORIZED_STATUSES:
        return "unauthorized"
    if status == 404:
        return "not_found"
    if status == 422:
        return "key_conflict"
    if 400 <= status < 500:
        return "refused"
    return "unexpected"


def _unexpected(operation: str, detail: str) -> GatewayProtocolError:
    ADVERSE_ANSWERS.labels(SERVICE_NAME, operation, "unexpected").inc()
    return GatewayProtocolError(detail)


def _json(response: HttpResponse, operation: str) -> dict[str, object]:
    try:
        answer = response.json()
    except ValueError:
        raise _unexpected(operation, "gateway sent no JSON") from None
    if not isinstance(answer, dict):
        raise _unexpected(operation, "gateway sent no JSON object")
    return answer
