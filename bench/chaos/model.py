"""What should have happened: the pure domain rules replayed key by key in partition order.

The model reads the command topic as it was written (partition order is the order the
worker must apply), and for each message predicts the result, the events and the state,
using ``domain.decisions.decide`` and ``domain.completion`` with an in-memory gateway that
answers as the sandbox gateway does. Its
own clock only orders things: times are never compared with the worker's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from domain.completion import Completion
from domain.decisions import decide
from domain.model import Decision, KeyState, Payment, PaymentMethod, apply_decision
from domain.streams import stream_key
from schemas.canonical import canonical_sha256
from schemas.commands import (
    COMMAND_TYPES,
    Command,
    named_payment_ids,
)
from schemas.errors import InvalidReason
from schemas.results import Reason
from tests.support.fakes import FixedProfiles, MemoryGateway
from tests.support.harness import Record

MODEL_EPOCH = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class ExpectedResult:
    """The result one message must get; ``same_as`` means "the original's bytes again"."""

    command_id: str | None
    status: str
    reason: str
    event_ids: tuple[str, ...] = ()
    payment_method_id: str | None = None
    payment_id: str | None = None
    same_as: str | None = None


@dataclass(frozen=True)
class ExpectedEvent:
    event_id: str
    type: str
    sequence: int
    command_id: str
    # The payload as JSON; fields the gateway makes up (authorization ids) are dropped.
    payload: dict[str, Any]


@dataclass
class ModelKey:
    """One key as the model sees it: its domain state (every method it ever saved, the
    removed ones included, as Postgres keeps them) and what the checks need besides."""

    key: str
    state: KeyState = field(init=False)
    payments: dict[str, Payment] = field(default_factory=dict)
    # Every gateway token each method held (Postgres purges a removed method's token).
    method_tokens: dict[str, set[str]] = field(default_factory=dict)
    # Accepted erasures that found a gateway customer to delete.
    erasures_with_customer: int = 0

    def __post_init__(self) -> None:
        self.state = KeyState(key=self.key)

    @property
    def last_sequence(self) -> int:
        return self.state.last_sequence

    @property
    def methods(self) -> dict[str, PaymentMethod]:
        return {method.payment_method_id: method for method in self.state.methods}

    @property
    def has_gateway_customer(self) -> bool:
        return self.state.gateway_customer_id is not None


@dataclass(frozen=True)
class ExpectedMessage:
    """One record of the command topic and everything it must cause."""

    record: Record
    result: ExpectedResult
    events: tuple[ExpectedEvent, ...] = ()
    poison_reason: InvalidReason | None = None


@dataclass
class Expectation:
    """The whole run's expected outcome."""

    messages: list[ExpectedMessage] = field(default_factory=list)
    keys: dict[str, ModelKey] = field(default_factory=dict)
    # Commands that must be in the inbox: command id -> expected status.
    inbox: dict[str, str] = field(default_factory=dict)

    def by_key(self) -> dict[bytes | None, list[ExpectedMessage]]:
        grouped: dict[bytes | None, list[ExpectedMessage]] = {}
        for message in self.messages:
            grouped.setdefault(message.record.key, []).append(message)
        return grouped


def comparable_payload(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    if event_type == "PaymentAuthorized":
        return {k: v for k, v in payload.items() if k != "authorizationId"}
    return payload


class Model:
    def __init__(self, poison: dict[tuple[bytes | None, bytes], InvalidReason]) -> None:
        self._poison = poison
        self._expectation = Expectation()
        self._digests: dict[UUID, bytes] = {}
        self._ticks = 0
        # The sandbox gateway's answers: a token that says ``decline`` is declined.
        self._completion = Completion(MemoryGateway(remember=False), FixedProfiles())

    def _now(self) -> datetime:
        self._ticks += 1
        return MODEL_EPOCH + timedelta(milliseconds=self._ticks)

    def replay(self, commands: list[Record]) -> Expectation:
        """``commands`` in partition order (records of one key share a partition)."""
        for record in sorted(commands, key=lambda r: (r.partition, r.offset)):
            self._expectation.messages.append(self._one(record))
        return self._expectation

    def _one(self, record: Record) -> ExpectedMessage:
        poison = self._poison.get((record.key, record.value or b""))
        if poison is not None:
            return ExpectedMessage(
                record, ExpectedResult(None, "invalid", str(poison)), poison_reason=poison
            )
        document = json.loads(record.value or b"{}")
        try:
            command = COMMAND_TYPES[document["type"]].model_validate(document)
        except (KeyError, ValidationError) as error:
            raise RuntimeError(
                f"record {record.partition}/{record.offset} was produced as valid but is not: "
                f"{error}"
            ) from None
        command_id = str(command.command_id)
        key = stream_key(command)
        if key is None:
            # A guest command with no guest meaning: refused on its rule alone, never
            # stored, so neither the inbox nor the duplicate check sees it.
            refused = decide(command, KeyState(key=""), self._now()).result
            return ExpectedMessage(
                record, ExpectedResult(command_id, refused.status, str(refused.reason))
            )
        digest = canonical_sha256(command)
        seen = self._digests.get(command.command_id)
        if seen is not None:
            if seen == digest:
                return ExpectedMessage(
                    record,
                    ExpectedResult(command_id, "", "", same_as=command_id),
                )
            return ExpectedMessage(
                record,
                ExpectedResult(command_id, "rejected", str(Reason.COMMAND_ID_CONFLICT)),
            )
        self._digests[command.command_id] = digest
        state = self._expectation.keys.setdefault(key, ModelKey(key))
        decision = self._decide(command, state)
        self._apply(command, state, decision)
        result = decision.result
        self._expectation.inbox[command_id] = result.status
        events = tuple(
            ExpectedEvent(
                event_id=str(event.event_id),
                type=event.type,
                sequence=event.sequence,
                command_id=command_id,
                payload=comparable_payload(event.type, json.loads(event.to_wire())["payload"]),
            )
            for event in decision.events
        )
        return ExpectedMessage(
            record,
            ExpectedResult(
                command_id=command_id,
                status=result.status,
                reason=str(result.reason),
                event_ids=tuple(str(e) for e in result.event_ids),
                payment_method_id=result.payment_method_id,
                payment_id=result.payment_id,
            ),
            events,
        )

    def _decide(self, command: Command, state: ModelKey) -> Decision:
        named = set(named_payment_ids(command))
        read = replace(
            state.state,
            payments=tuple(p for p in state.payments.values() if p.payment_id in named),
        )
        now = self._now()
        return self._completion.complete(command, read, decide(command, read, now), now)

    def _apply(self, command: Command, state: ModelKey, decision: Decision) -> None:
        for method in decision.changed_methods:
            if method.gateway_token is not None:
                state.method_tokens.setdefault(method.payment_method_id, set()).add(
                    method.gateway_token
                )
        for payment in decision.changed_payments:
            state.payments[payment.payment_id] = payment
        reference = decision.customer_reference
        if reference is not None and reference.customer_id is None and state.has_gateway_customer:
            state.erasures_with_customer += 1
        state.state = apply_decision(state.state, decision)


def replay(
    commands: list[Record], poison: dict[tuple[bytes | None, bytes], InvalidReason]
) -> Expectation:
    return Model(poison).replay(commands)


def method_summary(method: PaymentMethod) -> tuple[Any, ...]:
    """The stored fields of a payment method that the model predicts (no timestamps)."""
    return (
        method.payment_method_id,
        method.user_id,
        method.gateway_token,
        method.brand,
        method.last4,
        method.exp_month,
        method.exp_year,
        method.fingerprint,
        method.billing_name,
        method.is_default,
        method.active,
    )


def payment_summary(payment: Payment) -> tuple[Any, ...]:
    return (
        payment.payment_id,
        payment.user_id,
        payment.order_id,
        payment.amount,
        payment.currency,
        payment.payment_method_id,
        payment.status,
    )
