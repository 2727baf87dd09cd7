"""Commands consumed from ``payment.commands``.

Every command shares one envelope; ``type`` selects the payload model. Numbers and
booleans are strict (``"12"`` is not a month, ``true`` is not an integer); strings are
bounded and free text refuses control and bidi characters.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    model_validator,
)

from schemas.base import SCHEMA_VERSION, Identifier, WireModel
from schemas.currencies import ISO_4217_CODES

# Unicode categories Cc (controls, NUL) and the bidi overrides/isolates (Trojan Source).
_FORBIDDEN_TEXT_CHARACTERS = frozenset(
    [chr(c) for c in range(0x00, 0x20)]
    + [chr(0x7F)]
    + [chr(c) for c in range(0x80, 0xA0)]
    + [
        "\u061c",
        "\u200e",
        "\u200f",
        *map(chr, range(0x202A, 0x202F)),
        *map(chr, range(0x2066, 0x206A)),
    ]
)


def _reject_control_characters(value: str) -> str:
    # isdisjoint walks the characters in C; a generator over them cost ~0.1 us a character.
    if not _FORBIDDEN_TEXT_CHARACTERS.isdisjoint(value):
        raise ValueError("must not contain control or bidirectional-override characters")
    return value


DisplayText = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=140, strip_whitespace=False),
    AfterValidator(_reject_control_characters),
]
CardBrand = Literal["visa", "mastercard", "amex", "discover", "jcb", "diners", "unionpay", "other"]
Last4 = Annotated[str, StringConstraints(strict=True, pattern=r"^[0-9]{4}$")]
Month = Annotated[StrictInt, Field(ge=1, le=12)]
Year = Annotated[StrictInt, Field(ge=2000, le=2100)]
GatewayToken = Annotated[
    str, StringConstraints(strict=True, min_length=8, max_length=256, pattern=r"^[A-Za-z0-9_:.-]+$")
]
Fingerprint = Annotated[
    str, StringConstraints(strict=True, min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_:.-]+$")
]


class Card(WireModel):
    """What the tokenization service tells about a card; never its number or CVV."""

    brand: CardBrand
    last4: Last4
    exp_month: Month
    exp_year: Year
    fingerprint: Fingerprint


class Customer(WireModel):
    """Profile data for the gateway's customer record: used once, never stored or logged."""

    name: DisplayText
    email: Annotated[
        str, StringConstraints(strict=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    ]


class AddPaymentMethodPayload(WireModel):
    payment_method_id: Identifier | None = None
    gateway_token: GatewayToken
    card: Card
    billing_name: DisplayText | None = None
    make_default: StrictBool = False
    customer: Customer | None = None


class UpdatePaymentMethodPayload(WireModel):
    payment_method_id: Identifier
    exp_month: Month | None = None
    exp_year: Year | None = None
    billing_name: DisplayText | None = None
    # account_updater: the card network's automatic update of a reissued card.
    source: Literal["user", "account_updater"] = "user"


class RemovePaymentMethodPayload(WireModel):
    payment_method_id: Identifier
    reason: Literal["user_request", "card_closed", "fraud_suspected"] = "user_request"


class SetDefaultPaymentMethodPayload(WireModel):
    payment_method_id: Identifier


class EraseUserDataPayload(WireModel):
    pass


def _known_currency(code: str) -> str:
    if code not in ISO_4217_CODES:
        raise ValueError("must be an ISO 4217 currency code in upper case, e.g. EUR")
    return code


Currency = Annotated[str, StringConstraints(strict=True), AfterValidator(_known_currency)]
# Minor units (cents); the upper bound keeps amounts far inside a signed 64-bit integer.
Amount = Annotated[StrictInt, Field(gt=0, le=10**13)]


class InitiatePaymentPayload(WireModel):
    payment_id: Identifier
    order_id: Identifier
    amount: Amount
    currency: Currency
    payment_method_id: Identifier | None = None
    gateway_token: GatewayToken | None = None
    customer: Customer | None = None

    @model_validator(mode="after")
    def _exactly_one_instrument(self) -> InitiatePaymentPayload:
        if (self.payment_method_id is None) == (self.gateway_token is None):
            raise ValueError("give exactly one of paymentMethodId and gatewayToken")
        return self


class LinkGuestPaymentsPayload(WireModel):
    payment_ids: Annotated[list[Identifier], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _distinct(self) -> LinkGuestPaymentsPayload:
        if len(set(self.payment_ids)) != len(self.payment_ids):
            raise ValueError("paymentIds must not repeat")
        return self


# RFC 3339 date-time with an explicit offset. Pydantic alone would also take a number of
# seconds (``0``) or a string of digits as a timestamp, which no producer means.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_text(value: object) -> object:
    if isinstance(value, datetime):  # built in code, not read from the wire
        return value
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        raise ValueError("must be an RFC 3339 timestamp with an offset, e.g. 2026-11-30T10:00:00Z")
    return value


def _integer_not_boolean(value: object) -> object:
    # ``true == 1`` in Python, so a literal 1 alone would take a boolean.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be the integer 1")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]
SchemaVersion = Annotated[Literal[1], BeforeValidator(_integer_not_boolean)]


class CommandEnvelope(WireModel):
    """Fields common to every command."""

    command_id: UUID
    schema_version: SchemaVersion = SCHEMA_VERSION
    issued_at: Timestamp
    user_id: Identifier | None
    correlation_id: Identifier | None = None


class AddPaymentMethod(CommandEnvelope):
    type: Literal["AddPaymentMethod"]
    payload: AddPaymentMethodPayload


class UpdatePaymentMethod(CommandEnvelope):
    type: Literal["UpdatePaymentMethod"]
    payload: UpdatePaymentMethodPayload


class RemovePaymentMethod(CommandEnvelope):
    type: Literal["RemovePaymentMethod"]
    payload: RemovePaymentMethodPayload


class SetDefaultPaymentMethod(CommandEnvelope):
    type: Literal["SetDefaultPaymentMethod"]
    payload: SetDefaultPaymentMethodPayload


class EraseUserData(CommandEnvelope):
    type: Literal["EraseUserData"]
    payload: EraseUserDataPayload = EraseUserDataPayload()


class InitiatePayment(CommandEnvelope):
    type: Literal["InitiatePayment"]
    payload: InitiatePaymentPayload


class LinkGuestPayments(CommandEnvelope):
    type: Literal["LinkGuestPayments"]
    payload: LinkGuestPaymentsPayload


Command = (
    AddPaymentMethod
    | UpdatePaymentMethod
    | RemovePaymentMethod
    | SetDefaultPaymentMethod
    | EraseUserData
    | InitiatePayment
    | LinkGuestPayments
)
COMMAND_TYPES: dict[str, type[Command]] = {
    "AddPaymentMethod": AddPaymentMethod,
    "UpdatePaymentMethod": UpdatePaymentMethod,
    "RemovePaymentMethod": RemovePaymentMethod,
    "SetDefaultPaymentMethod": SetDefaultPaymentMethod,
    "EraseUserData": EraseUserData,
    "InitiatePayment": InitiatePayment,
    "LinkGuestPayments": LinkGuestPayments,
}


def named_payment_method_ids(command: Command) -> list[str]:
    """Payment method ids a command refers to (to check who owns them)."""
    if isinstance(command, AddPaymentMethod):
        return [command.payload.payment_method_id] if command.payload.payment_method_id else []
    if isinstance(command, EraseUserData | LinkGuestPayments):
        return []
    if isinstance(command, InitiatePayment):
        return [command.payload.payment_method_id] if command.payload.payment_method_id else []
    return [command.payload.payment_method_id]


def named_payment_ids(command: Command) -> list[str]:
    """Payment ids a command refers to, whoever they belong to."""
    if isinstance(command, InitiatePayment):
        return [command.payload.payment_id]
    if isinstance(command, LinkGuestPayments):
        return list(command.payload.payment_ids)
    return []


def carries_personal_data(command: Command) -> bool:
    """True when the command holds a name or an email (to withhold it from the DLQ)."""
    payload = command.payload
    return (
        getattr(payload, "customer", None) is not None
        or getattr(payload, "billing_name", None) is not None
    )


def expected_key(command: Command) -> str | None:
    """The Kafka key a command must carry: its user, or for a guest payment the payment.

    ``None`` means the envelope names no key (a guest command that is not a payment; it
    is rejected by its rule), and the message key is taken as it is.
    """
    if command.user_id is None and isinstance(command, InitiatePayment):
        return command.payload.payment_id
    return command.user_id
