"""The scaling run's workload: valid commands for many users, each one's number of events
known in advance, so the outcome is checked against an exact model."""

from __future__ import annotations

import json
import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class PlannedCommand:
    command_id: str
    user_id: str
    value: bytes
    expected_events: int


class Workload:
    """Valid commands for many users, each user's in an order that is always accepted.

    Per user: a first card (gateway customer created, card attached; the card becomes the
    default), then the cycle add card k → make k the default → update k's expiry →
    remove card k-1. At most two active cards, half of the cycle calls the gateway, and
    every command emits exactly one event (the first two: PaymentMethodAdded and
    DefaultPaymentMethodChanged).
    """

    def __init__(self, users: int, seed: int) -> None:
        self._users = [f"scale-user-{i:05d}" for i in range(users)]
        random.Random(seed).shuffle(self._users)
        self._steps: dict[str, int] = defaultdict(int)
        self._turn = 0

    def next_command(self, issued_at: datetime) -> PlannedCommand:
        user = self._users[self._turn % len(self._users)]
        self._turn += 1
        step = self._steps[user]
        self._steps[user] += 1
        command_id = str(uuid.uuid4())
        command_type, payload, events = self._step(user, step)
        envelope = {
            "commandId": command_id,
            "type": command_type,
            "schemaVersion": 1,
            "issuedAt": issued_at.isoformat(),
            "userId": user,
            "correlationId": f"scaling-{step}",
            "payload": payload,
        }
        return PlannedCommand(command_id, user, json.dumps(envelope).encode(), events)

    @staticmethod
    def _step(user: str, step: int) -> tuple[str, dict[str, Any], int]:
        if step == 0:
            payload = _add_card(user, 0)
            payload["customer"] = {"name": "Scaling Bench", "email": f"{user}@example.test"}
            return "AddPaymentMethod", payload, 2
        card, move = (step - 1) // 4 + 1, (step - 1) % 4
        if move == 0:
            return "AddPaymentMethod", _add_card(user, card), 1
        if move == 1:
            return "SetDefaultPaymentMethod", {"paymentMethodId": _card_id(user, card)}, 1
        if move == 2:
            return (
                "UpdatePaymentMethod",
                {"paymentMethodId": _card_id(user, card), "expMonth": 6, "source": "user"},
                1,
            )
        return "RemovePaymentMethod", {"paymentMethodId": _card_id(user, card - 1)}, 1


def _card_id(user: str, card: int) -> str:
    return f"pm_{user}_{card}"


def _add_card(user: str, card: int) -> dict[str, Any]:
    fingerprint = f"fp_{user}_{card}"
    return {
        "paymentMethodId": _card_id(user, card),
        "gatewayToken": f"tok_{fingerprint}",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "expMonth": 12,
            "expYear": 2031,
            "fingerprint": fingerprint,
        },
        "makeDefault": False,
    }
