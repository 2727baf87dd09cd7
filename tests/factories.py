"""Builders of valid commands for tests; each test changes only what it is about."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

ISSUED_AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def add_payment_method(
    user_id: str | None = "user-123",
    *,
    fingerprint: str = "fp_0000000001",
    exp_month: int = 12,
    exp_year: int = 2030,
    make_default: bool = False,
    payment_method_id: str | None = None,
    billing_name: str | None = None,
    command_id: str | None = None,
    issued_at: datetime = ISSUED_AT,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "gatewayToken": "tok_" + fingerprint,
        "card": {
            "brand": "visa",
            "last4": "4242",
            "expMonth": exp_month,
            "expYear": exp_year,
            "fingerprint": fingerprint,
        },
        "makeDefault": make_default,
    }
    if payment_method_id is not None:
        payload["paymentMethodId"] = payment_method_id
    if billing_name is not None:
        payload["billingName"] = billing_name
    return {
        "commandId": command_id or str(uuid.uuid4()),
        "type": "AddPaymentMethod",
        "schemaVersion": 1,
        "issuedAt": issued_at.isoformat(),
        "userId": user_id,
        "correlationId": "order-42",
        "payload": payload,
    }


def with_field(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with the field at a dotted ``path`` set to ``value``."""
    changed: dict[str, Any] = json.loads(json.dumps(document))
    target = changed
    *parents, leaf = path.split(".")
    for part in parents:
        target = target[part]
    target[leaf] = value
    return changed


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def command(
    command_type: str,
    user_id: str | None = "user-123",
    payload: dict[str, Any] | None = None,
    *,
    command_id: str | None = None,
    issued_at: datetime = ISSUED_AT,
) -> dict[str, Any]:
    """Any command envelope; ``payload`` as it goes on the wire (camelCase)."""
    return {
        "commandId": command_id or str(uuid.uuid4()),
        "type": command_type,
        "schemaVersion": 1,
        "issuedAt": issued_at.isoformat(),
        "userId": user_id,
        "correlationId": "corr-1",
        "payload": payload or {},
    }
