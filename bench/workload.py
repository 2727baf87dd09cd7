"""A realistic, deterministic command mix for the benchmark (DESIGN.md §4).

Users save, update and remove cards, change their default, pay with saved cards; guests
pay with one-time tokens and some later link those payments to an account; a few users
erase their data. The generator keeps a small model of each user's saved cards so that
almost every command is valid and accepted; a few are rejected on purpose, as in real
traffic (a card saved twice, an expired card, a method that is not there), and a guest
link can lose the race with the guest payment it names. The same seed gives the same
commands, byte for byte.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

ISSUED_AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
# Commands of one run are issued this far apart (their issuedAt; not when produced).
ISSUE_STEP = timedelta(milliseconds=5)
# Keeps the model realistic: a user with this many cards removes one before adding more.
CARDS_BEFORE_REMOVING = 6
CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK")
BRANDS = ("visa", "mastercard", "amex", "discover")

# Relative weights of what the next command does.
MIX: dict[str, float] = {
    "add": 24.0,
    "update": 9.0,
    "set_default": 7.0,
    "remove": 6.0,
    "pay": 32.0,
    "guest_pay": 14.0,
    "link_guest_payments": 2.5,
    "erase": 0.5,
    # Naturally rejected: the same card again, an expired card, an unknown method.
    "duplicate_add": 1.0,
    "expired_add": 0.5,
    "unknown_update": 0.5,
}


@dataclass(frozen=True, slots=True)
class BenchCommand:
    """One command as it goes on the wire."""

    key: bytes
    value: bytes
    command_id: str
    type: str


@dataclass(slots=True)
class _Card:
    payment_method_id: str
    fingerprint: str
    exp_month: int
    exp_year: int


@dataclass(slots=True)
class _User:
    user_id: str
    cards: list[_Card] = field(default_factory=list)  # active, oldest first
    default_id: str | None = None
    added: int = 0


@dataclass(slots=True)
class _GuestPayment:
    payment_id: str
    position: int


class WorkloadGenerator:
    """Builds commands one at a time; ``generate`` gives a whole run."""

    def __init__(self, *, users: int, seed: int, link_distance: int, run: str = "r") -> None:
        self._random = random.Random(seed)
        self._users = [_User(f"user-{run}-{index:06d}") for index in range(users)]
        self._run = run
        # A guest link names payments made at least this many commands earlier, so that
        # the payments (keyed by payment id, on other partitions) were processed first.
        self._link_distance = link_distance
        self._guest_payments: list[_GuestPayment] = []
        self._linkable_from = 0
        self._position = 0
        self._kinds = list(MIX)
        self._weights = [MIX[kind] for kind in self._kinds]

    def generate(self, count: int) -> list[BenchCommand]:
        return [self.next() for _ in range(count)]

    def next(self) -> BenchCommand:
        kind = self._random.choices(self._kinds, self._weights)[0]
        if kind in ("guest_pay", "link_guest_payments"):
            document = self._guest_pay() if kind == "guest_pay" else self._link()
        else:
            document = self._user_command(kind, self._random.choice(self._users))
        return self._emit(document)

    def _emit(self, document: dict[str, Any]) -> BenchCommand:
        self._position += 1
        key = document["userId"] or document["payload"]["paymentId"]
        return BenchCommand(
            key=key.encode(),
            value=json.dumps(document, separators=(",", ":")).encode(),
            command_id=document["commandId"],
            type=document["type"],
        )

    def gateway_lifecycle(self, order: list[int]) -> list[BenchCommand]:
        """Per user: save a first card (which creates the gateway customer), pay twice with
        it, update it; the users' commands interleaved in ``order`` (a user's index once per
        command, each user four times; a user's commands stay in their order).

        Three of the four commands wait for the gateway (create customer + attach, then two
        authorizations); the card and the payments carry the customer profile as often as
        in the realistic mix (90 % and 80 %), so the others fetch it from the User Service.
        """
        steps = [0] * len(self._users)
        commands: list[BenchCommand] = []
        for index in order:
            user = self._users[index]
            step, steps[index] = steps[index], steps[index] + 1
            if step == 0:
                document = self._add(user, make_default=False)
            elif step in (1, 2):
                document = self._pay(user)
            else:
                document = self._update(user)
            commands.append(self._emit(document))
        return commands

    # --- envelopes -----------------------------------------------------------------------

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _envelope(self, command_type: str, user_id: str | None, payload: Any) -> dict[str, Any]:
        issued_at = ISSUED_AT + ISSUE_STEP * self._position
        return {
            "commandId": self._uuid(),
            "type": command_type,
            "schemaVersion": 1,
            "issuedAt": issued_at.isoformat().replace("+00:00", "Z"),
            "userId": user_id,
            "correlationId": f"order-{self._run}-{self._position}",
            "payload": payload,
        }

    def _customer(self, user_id: str, share: float) -> dict[str, str] | None:
        """Most producers send the profile along; the User Service is the last resort."""
        if self._random.random() >= share:
            return None
        return {"name": f"Customer {user_id}", "email": f"{user_id}@mail.example"}

    # --- user commands -------------------------------------------------------------------

    def _user_command(self, kind: str, user: _User) -> dict[str, Any]:
        if not user.cards and kind not in ("erase", "expired_add", "unknown_update"):
            kind = "add"
        if kind == "add" and len(user.cards) >= CARDS_BEFORE_REMOVING:
            kind = "remove"
        if kind == "add":
            return self._add(user)
        if kind == "duplicate_add":
            return self._add(user, again=self._random.choice(user.cards))
        if kind == "expired_add":
            return self._add(user, expired=True)
        if kind == "update":
            return self._update(user)
        if kind == "unknown_update":
            payload = {"paymentMethodId": f"pm-unknown-{self._uuid()}", "expYear": 2031}
            return self._envelope("UpdatePaymentMethod", user.user_id, payload)
        if kind == "set_default":
            return self._set_default(user)
        if kind == "remove":
            return self._remove(user)
        if kind == "pay":
            return self._pay(user)
        return self._erase(user)

    def _add(
        self,
        user: _User,
        *,
        again: _Card | None = None,
        expired: bool = False,
        make_default: bool | None = None,
    ) -> dict[str, Any]:
        if again is not None:
            card = again  # identical card: rejected as a duplicate, nothing changes
        else:
            user.added += 1
            card = _Card(
                payment_method_id=f"pm-{user.user_id}-{user.added}",
                fingerprint=f"fp_{user.user_id}_{user.added}",
                exp_month=self._random.randint(1, 12),
                exp_year=2020 if expired else self._random.randint(2027, 2033),
            )
        if make_default is None:
            make_default = again is None and not expired and self._random.random() < 0.2
        payload: dict[str, Any] = {
            "paymentMethodId": card.payment_method_id,
            "gatewayToken": f"tok_{card.fingerprint}",
            "card": {
                "brand": self._random.choice(BRANDS),
                "last4": f"{self._random.randint(0, 9999):04d}",
                "expMonth": card.exp_month,
                "expYear": card.exp_year,
                "fingerprint": card.fingerprint,
            },
            "makeDefault": make_default,
        }
        if self._random.random() < 0.5:
            payload["billingName"] = f"Holder {user.user_id}"
        customer = self._customer(user.user_id, share=0.9)
        if customer is not None:
            payload["customer"] = customer
        if again is None and not expired:
            user.cards.append(card)
            if user.default_id is None or make_default:
                user.default_id = card.payment_method_id
        return self._envelope("AddPaymentMethod", user.user_id, payload)

    def _update(self, user: _User) -> dict[str, Any]:
        card = self._random.choice(user.cards)
        payload: dict[str, Any] = {"paymentMethodId": card.payment_method_id}
        if self._random.random() < 0.6:
            card.exp_year = 2034 + (card.exp_year - 2026) % 5  # always a change, still valid
            payload |= {"expMonth": card.exp_month, "expYear": card.exp_year}
            payload["source"] = self._random.choice(("user", "account_updater"))
        else:
            payload["billingName"] = f"Holder {user.user_id} {self._position}"
        return self._envelope("UpdatePaymentMethod", user.user_id, payload)

    def _set_default(self, user: _User) -> dict[str, Any]:
        card = self._random.choice(user.cards)
        user.default_id = card.payment_method_id
        payload = {"paymentMethodId": card.payment_method_id}
        return self._envelope("SetDefaultPaymentMethod", user.user_id, payload)

    def _remove(self, user: _User) -> dict[str, Any]:
        card = self._random.choice(user.cards)
        user.cards.remove(card)
        if user.default_id == card.payment_method_id:
            user.default_id = user.cards[-1].payment_method_id if user.cards else None
        payload = {"paymentMethodId": card.payment_method_id, "reason": "user_request"}
        return self._envelope("RemovePaymentMethod", user.user_id, payload)

    def _pay(self, user: _User) -> dict[str, Any]:
        card = next((c for c in user.cards if c.payment_method_id == user.default_id), None)
        if card is None or self._random.random() < 0.2:
            card = self._random.choice(user.cards)
        payload: dict[str, Any] = {
            "paymentId": f"pay-{self._uuid()}",
            "orderId": f"order-{self._run}-{self._position}",
            "amount": self._random.randint(100, 50_000),
            "currency": self._random.choice(CURRENCIES),
            "paymentMethodId": card.payment_method_id,
        }
        customer = self._customer(user.user_id, share=0.8)
        if customer is not None:
            payload["customer"] = customer
        return self._envelope("InitiatePayment", user.user_id, payload)

    def _erase(self, user: _User) -> dict[str, Any]:
        user.cards.clear()
        user.default_id = None
        return self._envelope("EraseUserData", user.user_id, {})

    # --- guests --------------------------------------------------------------------------

    def _guest_pay(self) -> dict[str, Any]:
        payment_id = f"pay-guest-{self._uuid()}"
        # A few cards are declined by the sandbox gateway: still an accepted command.
        token = "tok_decline_guest" if self._random.random() < 0.03 else f"tok_guest_{payment_id}"
        payload: dict[str, Any] = {
            "paymentId": payment_id,
            "orderId": f"order-{self._run}-{self._position}",
            "amount": self._random.randint(100, 50_000),
            "currency": self._random.choice(CURRENCIES),
            "gatewayToken": token,
        }
        customer = self._customer(payment_id, share=0.5)
        if customer is not None:
            payload["customer"] = customer
        self._guest_payments.append(_GuestPayment(payment_id, self._position))
        return self._envelope("InitiatePayment", None, payload)

    def _link(self) -> dict[str, Any]:
        """A user links guest payments made long enough ago (else: pay as a guest)."""
        ready = self._linkable_from
        while (
            ready < len(self._guest_payments)
            and self._guest_payments[ready].position <= self._position - self._link_distance
        ):
            ready += 1
        if ready == self._linkable_from:
            return self._guest_pay()
        count = min(ready - self._linkable_from, self._random.randint(1, 3))
        chosen = self._guest_payments[self._linkable_from : self._linkable_from + count]
        self._linkable_from += count
        user = self._random.choice(self._users)
        payload = {"paymentIds": [payment.payment_id for payment in chosen]}
        return self._envelope("LinkGuestPayments", user.user_id, payload)


def generate_workload(
    commands: int, users: int, seed: int, run: str = "r", link_distance: int | None = None
) -> list[BenchCommand]:
    """``commands`` commands over ``users`` users; the same arguments give the same bytes."""
    # Half the run: a pre-produced backlog is consumed unevenly across partitions.
    distance = link_distance if link_distance is not None else max(200, commands // 2)
    generator = WorkloadGenerator(users=users, seed=seed, link_distance=distance, run=run)
    return generator.generate(commands)


GATEWAY_LIFECYCLE_COMMANDS = 4


def generate_gateway_workload(users: int, seed: int, run: str = "g") -> list[BenchCommand]:
    """``users`` times (save a first card, pay twice, update the card), users interleaved at
    random (the same arguments give the same bytes): the gateway-bound workload of the
    delayed-gateway measurement (``WorkloadGenerator.gateway_lifecycle``)."""
    generator = WorkloadGenerator(users=users, seed=seed, link_distance=0, run=run)
    order = [index for index in range(users) for _ in range(GATEWAY_LIFECYCLE_COMMANDS)]
    random.Random(seed).shuffle(order)
    return generator.gateway_lifecycle(order)
