"""Events published to ``payment.events``.

No PII and no tokens, ever: Kafka topics cannot be erased. Events only evolve
compatibly (new optional fields), which a test checks against the committed schemas.
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal
from uuid import UUID

from pydantic import AwareDatetime, ConfigDict

from schemas.base import SCHEMA_VERSION, Identifier, WireModel
from schemas.commands import CardBrand


class EventModel(WireModel):
    """Events tolerate unknown fields, so consumers built today accept tomorrow's events.

    (Commands are strict instead: a typo in a command must not pass silently.)
    """

    model_config = ConfigDict(extra="ignore")


# uuid5: the version (5) and variant (RFC 4122) bits, as ``uuid.UUID(version=5)`` sets them.
_UUID5_CLEAR: Final = ~((0xF000 << 64) | (0xC000 << 48))
_UUID5_SET: Final = (5 << 76) | (0x8000 << 48)


def event_id(command_id: UUID, index: int) -> UUID:
    """The deterministic id of the ``index``-th event of a command (0-based).

    ``uuid5(command_id, str(index))``, computed as the standard library does (SHA-1 of the
    namespace's bytes and the name) in half its time: one per event, on the hot path.
    ``tests/unit/test_wire_encoding.py`` compares it with ``uuid.uuid5``.
    """
    digest = hashlib.sha1(command_id.bytes + str(index).encode(), usedforsecurity=False).digest()
    return UUID(int=(int.from_bytes(digest[:16]) & _UUID5_CLEAR) | _UUID5_SET)


class PaymentMethodAddedPayload(EventModel):
    payment_method_id: Identifier
    brand: CardBrand
    last4: str
    exp_month: int
    exp_year: int


class DefaultPaymentMethodChangedPayload(EventModel):
    previous_payment_method_id: Identifier | None
    new_payment_method_id: Identifier | None


class PaymentMethodUpdatedPayload(EventModel):
    """The changed non-PII fields with their previous values, and who changed them."""

    payment_method_id: Identifier
    source: Literal["user", "account_updater"]
    exp_month: int | None = None
    exp_year: int | None = None
    previous_exp_month: int | None = None
    previous_exp_year: int | None = None
    # The billing name is personal data: events only say that it changed.
    billing_name_changed: bool = False


RemovalReason = Literal["user_request", "card_closed", "fraud_suspected", "erasure"]


class PaymentMethodRemovedPayload(EventModel):
    payment_method_id: Identifier
    reason: RemovalReason


class UserPaymentDataErasedPayload(EventModel):
    removed_payment_method_ids: list[Identifier]


class PaymentInitiatedPayload(EventModel):
    payment_id: Identifier
    order_id: Identifier
    amount: int
    currency: str
    # The saved method used, or null when the payment used a one-time gateway token.
    payment_method_id: Identifier | None
    guest: bool


class PaymentAuthorizedPayload(EventModel):
    payment_id: Identifier
    authorization_id: Identifier


class PaymentDeclinedPayload(EventModel):
    payment_id: Identifier
    # The gateway's reason, a short code such as "insufficient_funds".
    decline_code: Identifier


class GuestPaymentsLinkedPayload(EventModel):
    payment_ids: list[Identifier]


EventPayload = (
    PaymentMethodAddedPayload
    | PaymentMethodUpdatedPayload
    | PaymentMethodRemovedPayload
    | DefaultPaymentMethodChangedPayload
    | UserPaymentDataErasedPayload
    | PaymentInitiatedPayload
    | PaymentAuthorizedPayload
    | PaymentDeclinedPayload
    | GuestPaymentsLinkedPayload
)

EventType = Literal[
    "PaymentMethodAdded",
    "PaymentMethodUpdated",
    "PaymentMethodRemoved",
    "DefaultPaymentMethodChanged",
    "UserPaymentDataErased",
    "PaymentInitiated",
    "PaymentAuthorized",
    "PaymentDeclined",
    "GuestPaymentsLinked",
]


class EventEnvelope(EventModel):
    event_id: UUID
    type: EventType
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: AwareDatetime
    user_id: Identifier | None
    sequence: int
    command_id: UUID
    correlation_id: Identifier | None = None
    payload: EventPayload

    def kafka_headers(self) -> list[tuple[str, bytes]]:
        """Headers that let consumers route and de-duplicate without parsing the body."""
        return [
            ("eventId", str(self.event_id).encode()),
            ("type", self.type.encode()),
            ("schemaVersion", str(self.schema_version).encode()),
        ]
