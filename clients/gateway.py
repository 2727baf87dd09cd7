"""The payment gateway over HTTP: ``domain.ports.PaymentGateway`` for a JSON gateway.

Every call carries the idempotency key ``domain.completion`` derived from the command
(``domain.ports.idempotency_key``). Every request body is a function of the command and
the key's stored state only, so a replay is byte for byte the first request and can never
be refused as "the same key with another body". The one input that is not (a profile from
the User Service) is sent in a call that is harmless to repeat (``set_customer_profile``),
under a key that includes it.

How each HTTP answer maps onto the domain's answers (``domain.errors``; what each then
does to a command is ``domain.completion``'s, and the docs' table of answers):

- 2xx: done. A body is read only where the worker needs something from it.
- 408, 409, 425, 429, 5xx, timeouts: retried within the call's budget, then
  ``TransientError`` (the key waits and is retried with the same idempotency keys). 409 (a
  request with this key is still in flight) is the gateway answering: no breaker failure.
- 401, 403: ``TransientError``; the circuit breaker counts them as failures.
- 404: ``NotThere``.
- 422: ``OutsideContract``: the gateway holds another request under this key.
- another 4xx: ``Refused``.
- anything else, or a body without what the contract promises: ``OutsideContract``
  (``OutcomeUnknown`` for an authorization), final: a repeat with the same key gets the
  same answer.
- a cancel's answer must confirm it: any other answer is ``TransientError``.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from clients.http import HttpResponse, ResilientHttp, ServiceUnavailable
from domain.errors import (
    FinalAnswer,
    NotThere,
    OutcomeUnknown,
    OutsideContract,
    Refused,
    TransientError,
)
from domain.model import AuthorizationAnswer
from telemetry.metrics import ADVERSE_ANSWERS, AUTHORIZATION_CANCELS, ORPHAN_AUTHORIZATIONS

SERVICE_NAME = "gateway"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Retried within a call's budget; then the call fails transiently and the key waits.
_RETRIED_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_BUSY_STATUSES = frozenset({409})
_UNAUTHORIZED_STATUSES = frozenset({401, 403})

logger = logging.getLogger(__name__)


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
        """Approved or declined; ``OutcomeUnknown`` when the answer says neither (a status
        such as ``pending``, a body that does not decode); a refused request (4xx) is
        ``Refused``, another request under the key (422) ``OutsideContract``."""
        fraud_data = {"email": email} if email else {}
        request: dict[str, object] = {
            "reference": payment_id,
            "amount": amount,
            "currency": currency,
            "token": gateway_token,
            "customer": customer_id,
            **fraud_data,
        }
        response = self._post("authorize", "/v1/authorizations", request, idempotency_key)
        try:
            body = _json(response, "authorize")
        except OutsideContract as unknown:
            raise OutcomeUnknown(str(unknown)) from None
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
        raise OutcomeUnknown(f"authorization status {_identifier(status, 'none')}")

    def cancel_authorization(
        self, *, request_key: str, payment_id: str, idempotency_key: str, reason: str
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
        except FinalAnswer as error:
            raise TransientError(f"the gateway did not confirm a cancel: {error}") from None
        if body.get("cancelled") is not True:
            ADVERSE_ANSWERS.labels(SERVICE_NAME, "cancel_authorization", "unexpected").inc()
            raise TransientError("the gateway did not confirm a cancel")
        found = body.get("authorization") is not None
        AUTHORIZATION_CANCELS.labels(reason).inc()
        if found:
            ORPHAN_AUTHORIZATIONS.labels(reason).inc()
            logger.warning(
                "cancelled an authorization the worker does not keep",
                extra={"requestKey": request_key, "reason": reason},
            )
        return found

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
            raise NotThere(f"gateway: {operation}: 404")
        if answer == "key_conflict":
            raise OutsideContract(f"gateway: {operation}: 422, another request under this key")
        if answer == "refused":
            raise Refused(f"gateway refused {operation}: {status}")
        raise OutsideContract(f"gateway: {operation}: unexpected status {status}")


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


def _unexpected(operation: str, detail: str) -> OutsideContract:
    ADVERSE_ANSWERS.labels(SERVICE_NAME, operation, "unexpected").inc()
    return OutsideContract(detail)


def _json(response: HttpResponse, operation: str) -> dict[str, object]:
    try:
        answer = response.json()
    except ValueError:
        raise _unexpected(operation, "gateway sent no JSON") from None
    if not isinstance(answer, dict):
        raise _unexpected(operation, "gateway sent no JSON object")
    return answer
