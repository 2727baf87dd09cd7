"""The chaos run's command stream: valid commands, duplicates and poison, from a seed.

Keys never interact: payment method ids and payment ids are unique per user, guest
payments have keys of their own, and no command links one key's data to another's. So
replaying the pure domain rules key by key, in partition order, predicts every outcome
(``bench.chaos.model``).

Tokens and ids never contain ``slow`` or ``unavailable`` (the sandbox gateway's switches);
a token containing ``decline`` is declined, which the model knows too.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.errors import InvalidReason

ISSUED_AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
# A Luhn-valid test card number: a command carrying it must be dead-lettered, body withheld.
TEST_CARD_NUMBER = "4111111111111111"

MessageKind = Literal["command", "exact_duplicate", "conflicting_duplicate", "poison"]


@dataclass(frozen=True)
class Message:
    """One record to produce to the command topic."""

    key: bytes
    value: bytes
    kind: MessageKind
    # For poison: the reason the worker must give in the DLQ and the result.
    poison_reason: InvalidReason | None = None


@dataclass(frozen=True)
class WorkloadSpec:
    messages: int
    users: int
    seed: int
    exact_duplicate_rate: float = 0.03
    conflicting_duplicate_rate: float = 0.015
    poison_rate: float = 0.03
    guest_payment_rate: float = 0.05


@dataclass
class _User:
    """What the generator intends for one user; the model, not this, predicts outcomes."""

    user_id: str
    carries_customer: bool
    methods: list[str] = field(default_factory=list)
    fingerprints: dict[str, tuple[int, int]] = field(default_factory=dict)
    method_fingerprint: dict[str, str] = field(default_factory=dict)
    added: int = 0
    payments: int = 0
    recent: list[dict[str, Any]] = field(default_factory=list)


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _with(document: dict[str, Any], path: tuple[str, ...], value: object) -> bytes:
    changed = copy.deepcopy(document)
    target = changed
    for name in path[:-1]:
        target = target[name]
    target[path[-1]] = value
    return encode(changed)


def _amount_as(document: dict[str, Any], text: bytes) -> bytes:
    """The command with its amount written as ``text`` (JSON no encoder would write)."""
    return encode(document).replace(b'"amount":100', b'"amount":' + text)


# Each kind of poison, from a valid InitiatePayment whose amount is 100.
_POISON: dict[InvalidReason, Callable[[dict[str, Any]], bytes]] = {
    InvalidReason.NOT_JSON: lambda d: encode(d)[:40],
    InvalidReason.INVALID_UTF8: lambda d: b'{"type": "\xff\xfe"}',
    InvalidReason.EMPTY_VALUE: lambda d: b"",
    InvalidReason.NOT_AN_OBJECT: lambda d: b"[1, 2, 3]",
    InvalidReason.SCHEMA_VIOLATION: lambda d: _with(d, ("payload", "amount"), "100"),
    InvalidReason.UNKNOWN_COMMAND_TYPE: lambda d: _with(d, ("type",), "RefundEverything"),
    InvalidReason.UNSUPPORTED_SCHEMA_VERSION: lambda d: _with(d, ("schemaVersion",), 2),
    InvalidReason.SENSITIVE_DATA: lambda d: _with(d, ("payload", "orderId"), TEST_CARD_NUMBER),
    InvalidReason.OVERSIZE: lambda d: _with(d, ("payload", "padding"), "x" * (70 * 1024)),
    InvalidReason.KEY_MISMATCH: encode,
    InvalidReason.DUPLICATE_KEY: lambda d: _amount_as(d, b'100,"amount":200'),
    InvalidReason.NUMBER_OUT_OF_RANGE: lambda d: _amount_as(d, b"9" * 30),
    InvalidReason.NON_FINITE_NUMBER: lambda d: _amount_as(d, b"NaN"),
}


class WorkloadGenerator:
    def __init__(self, spec: WorkloadSpec) -> None:
        self._spec = spec
        self._rng = random.Random(spec.seed)
        self._run = f"{spec.seed:x}"
        self._users = [
            _User(f"chaos-{self._run}-u{n:05d}", carries_customer=self._rng.random() < 0.5)
            for n in range(spec.users)
        ]
        self._guest_payments = 0
        self._commands = 0

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _envelope(
        self, command_type: str, user_id: str | None, payload: dict[str, Any]
    ) -> dict[str, Any]:
        self._commands += 1
        return {
            "commandId": self._uuid(),
            "type": command_type,
            "schemaVersion": 1,
            "issuedAt": ISSUED_AT.isoformat(),
            "userId": user_id,
            "correlationId": f"corr-{self._commands}",
            "payload": payload,
        }

    def _customer(self, user: _User) -> dict[str, str] | None:
        if not user.carries_customer:
            return None  # the worker asks the User Service stand-in
        return {"name": f"Customer {user.user_id[-5:]}", "email": f"{user.user_id}@example.test"}

    # --- valid commands of one user ---------------------------------------------------

    def _add(self, user: _User) -> dict[str, Any]:
        rng = self._rng
        roll = rng.random()
        if user.fingerprints and roll < 0.12:
            # The same card again: same expiry (duplicate) or a new one (an update).
            fingerprint = rng.choice(sorted(user.fingerprints))
            month, year = user.fingerprints[fingerprint]
            if rng.random() < 0.5:
                year += 1
        else:
            user.added += 1
            decline = "decline" if rng.random() < 0.15 else "card"
            fingerprint = f"fp_{decline}_{user.user_id}_{user.added}"
            month, year = rng.randint(1, 12), rng.randint(2027, 2032)
            if rng.random() < 0.04:
                year = 2024  # expired at issuedAt: rejected
        method_id = f"pm-{user.user_id}-{user.added}"
        payload: dict[str, Any] = {
            "paymentMethodId": method_id,
            "gatewayToken": f"tok_{fingerprint}",
            "card": {
                "brand": rng.choice(["visa", "mastercard", "amex"]),
                "last4": f"{rng.randint(0, 9999):04d}",
                "expMonth": month,
                "expYear": year,
                "fingerprint": fingerprint,
            },
            "makeDefault": rng.random() < 0.25,
        }
        if rng.random() < 0.5:
            payload["billingName"] = f"Holder {user.added}"
        customer = self._customer(user)
        if customer is not None:
            payload["customer"] = customer
        if year >= 2026:
            user.fingerprints.setdefault(fingerprint, (month, year))
            user.method_fingerprint.setdefault(method_id, fingerprint)
            if method_id not in user.methods:
                user.methods.append(method_id)
        return self._envelope("AddPaymentMethod", user.user_id, payload)

    def _known_or_unknown_method(self, user: _User) -> str:
        if user.methods and self._rng.random() < 0.93:
            return self._rng.choice(user.methods)
        return f"pm-{user.user_id}-unknown-{self._rng.randint(1, 99)}"

    def _update(self, user: _User) -> dict[str, Any]:
        payload: dict[str, Any] = {"paymentMethodId": self._known_or_unknown_method(user)}
        roll = self._rng.random()
        if roll < 0.5:
            payload["expYear"] = self._rng.randint(2027, 2033)
            payload["expMonth"] = self._rng.randint(1, 12)
        elif roll < 0.85:
            payload["billingName"] = f"Renamed {self._rng.randint(1, 5)}"
        else:
            payload["source"] = "account_updater"
            payload["expYear"] = self._rng.randint(2030, 2034)
        return self._envelope("UpdatePaymentMethod", user.user_id, payload)

    def _remove(self, user: _User) -> dict[str, Any]:
        method_id = self._known_or_unknown_method(user)
        payload: dict[str, Any] = {"paymentMethodId": method_id}
        if self._rng.random() < 0.3:
            payload["reason"] = self._rng.choice(["card_closed", "fraud_suspected"])
        if method_id in user.methods and self._rng.random() < 0.8:
            user.methods.remove(method_id)
            user.fingerprints.pop(user.method_fingerprint.get(method_id, ""), None)
        return self._envelope("RemovePaymentMethod", user.user_id, payload)

    def _set_default(self, user: _User) -> dict[str, Any]:
        payload = {"paymentMethodId": self._known_or_unknown_method(user)}
        return self._envelope("SetDefaultPaymentMethod", user.user_id, payload)

    def _pay(self, user: _User) -> dict[str, Any]:
        user.payments += 1
        payload: dict[str, Any] = {
            "paymentId": f"pay-{user.user_id}-{user.payments}",
            "orderId": f"order-{user.user_id}-{user.payments}",
            "amount": self._rng.randint(100, 99_999),
            "currency": self._rng.choice(["EUR", "USD", "GBP"]),
        }
        if user.methods and self._rng.random() < 0.7:
            payload["paymentMethodId"] = self._known_or_unknown_method(user)
        else:
            kind = "decline" if self._rng.random() < 0.2 else "once"
            payload["gatewayToken"] = f"tok_{kind}_{user.user_id}_{user.payments}"
        customer = self._customer(user)
        if customer is not None:
            payload["customer"] = customer
        return self._envelope("InitiatePayment", user.user_id, payload)

    def _erase(self, user: _User) -> dict[str, Any]:
        user.methods.clear()
        user.fingerprints.clear()
        return self._envelope("EraseUserData", user.user_id, {})

    def _link_unknown(self, user: _User) -> dict[str, Any]:
        # Payment ids that never exist: rejected payment_not_found, with no cross-key effect.
        payload = {"paymentIds": [f"pay-nowhere-{self._uuid()}"]}
        return self._envelope("LinkGuestPayments", user.user_id, payload)

    def _user_command(self, user: _User) -> dict[str, Any]:
        roll = self._rng.random()
        if not user.methods or roll < 0.28:
            return self._add(user)
        if roll < 0.42:
            return self._update(user)
        if roll < 0.52:
            return self._remove(user)
        if roll < 0.62:
            return self._set_default(user)
        if roll < 0.97:
            return self._pay(user)
        if roll < 0.985:
            return self._erase(user)
        return self._link_unknown(user)

    def _guest_command(self) -> tuple[bytes, dict[str, Any]]:
        self._guest_payments += 1
        payment_id = f"guestpay-{self._run}-{self._guest_payments}"
        if self._rng.random() < 0.1:
            # A guest trying to save a card: rejected by its rule, on a key of its own.
            key = f"guest-{self._run}-{self._guest_payments}"
            document = self._envelope(
                "AddPaymentMethod",
                None,
                {
                    "gatewayToken": f"tok_guest_{self._guest_payments}",
                    "card": {
                        "brand": "visa",
                        "last4": "1111",
                        "expMonth": 1,
                        "expYear": 2030,
                        "fingerprint": f"fp_guest_{self._guest_payments}",
                    },
                },
            )
            return key.encode(), document
        kind = "decline" if self._rng.random() < 0.2 else "guest"
        payload: dict[str, Any] = {
            "paymentId": payment_id,
            "orderId": f"order-{payment_id}",
            "amount": self._rng.randint(100, 50_000),
            "currency": "EUR",
            "gatewayToken": f"tok_{kind}_{payment_id}",
        }
        if self._rng.random() < 0.5:
            payload["customer"] = {"name": "Guest Buyer", "email": f"{payment_id}@example.test"}
        return payment_id.encode(), self._envelope("InitiatePayment", None, payload)

    # --- duplicates and poison ----------------------------------------------------------

    def _conflicting(self, original: dict[str, Any]) -> dict[str, Any]:
        """Same commandId, different content: must be rejected ``command_id_conflict``."""
        changed = copy.deepcopy(original)
        payload = changed["payload"]
        match changed["type"]:
            case "AddPaymentMethod" | "UpdatePaymentMethod":
                payload["billingName"] = f"Conflicting {self._rng.randint(1, 999)}"
            case "InitiatePayment":
                payload["amount"] += 1
            case "RemovePaymentMethod" | "SetDefaultPaymentMethod":
                payload["paymentMethodId"] += "-other"
            case _:
                changed["correlationId"] = f"{changed['correlationId']}-other"
        return changed

    def _poison(self, user: _User) -> Message:
        key = user.user_id.encode()
        valid = self._envelope(
            "InitiatePayment",
            user.user_id,
            {
                "paymentId": f"poison-{self._uuid()}",
                "orderId": "order-poison",
                "amount": 100,
                "currency": "EUR",
                "gatewayToken": "tok_poison_never_charged",
            },
        )
        reason = self._rng.choice(sorted(_POISON))
        if reason == InvalidReason.KEY_MISMATCH:
            # A valid command under a key that is not its user's.
            key = (user.user_id + "-not-me").encode()
        value = _POISON[reason](valid)
        return Message(key, value, "poison", reason)

    def generate(self) -> list[Message]:
        spec, rng = self._spec, self._rng
        messages: list[Message] = []
        # Earlier valid messages that may be sent again, as (key, value, document).
        sent: list[tuple[bytes, bytes, dict[str, Any]]] = []
        while len(messages) < spec.messages:
            roll = rng.random()
            if sent and roll < spec.exact_duplicate_rate:
                key, value, _ = rng.choice(sent[-500:])
                messages.append(Message(key, value, "exact_duplicate"))
                continue
            roll -= spec.exact_duplicate_rate
            if sent and roll < spec.conflicting_duplicate_rate:
                key, _, document = rng.choice(sent[-500:])
                messages.append(
                    Message(key, encode(self._conflicting(document)), "conflicting_duplicate")
                )
                continue
            roll -= spec.conflicting_duplicate_rate
            if roll < spec.poison_rate:
                messages.append(self._poison(rng.choice(self._users)))
                continue
            roll -= spec.poison_rate
            if roll < spec.guest_payment_rate:
                key, document = self._guest_command()
            else:
                user = rng.choice(self._users)
                key, document = user.user_id.encode(), self._user_command(user)
            value = encode(document)
            sent.append((key, value, document))
            messages.append(Message(key, value, "command"))
        return messages


def generate(spec: WorkloadSpec) -> list[Message]:
    return WorkloadGenerator(spec).generate()


def describe(messages: list[Message]) -> str:
    kinds = Counter(message.kind for message in messages)
    poison = Counter(str(m.poison_reason) for m in messages if m.poison_reason is not None)
    keys = len({message.key for message in messages})
    return (
        f"{len(messages)} messages on {keys} keys: {kinds['command']} commands, "
        f"{kinds['exact_duplicate']} exact duplicates, "
        f"{kinds['conflicting_duplicate']} conflicting duplicates, {kinds['poison']} poison ("
        + ", ".join(f"{reason} {count}" for reason, count in sorted(poison.items()))
        + ")"
    )
