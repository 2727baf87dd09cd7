"""What the worker should do with a workload, from the real domain rules, in memory.

Replaying the commands through ``decide`` (with an always-available sandbox gateway)
tells how many events and results each command yields, which sets the fan-out of the
raw Kafka baseline, checks that the workload is mostly accepted, and gives the exact
rows the worker writes to Postgres, for the database baseline.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bench.workload import BenchCommand
from domain.decisions import creates_gateway_customer, decide
from domain.model import (
    AuthorizationAnswer,
    CustomerReference,
    KeyState,
    Payment,
    PaymentMethod,
)
from domain.payment_rules import settle_authorization
from domain.streams import stream_key
from schemas.commands import (
    COMMAND_TYPES,
    EraseUserData,
    InitiatePayment,
    named_payment_ids,
    named_payment_method_ids,
)

DECIDED_AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CommandRows:
    """The Postgres rows one command writes: its inbox row and the state it changes."""

    key: str
    inbox: dict[str, Any]
    methods: tuple[dict[str, Any], ...]
    new_payments: tuple[dict[str, Any], ...]
    changed_payments: tuple[dict[str, Any], ...]
    last_sequence: int | None
    customer_id: str | None  # a new gateway customer of ``key``


@dataclass
class ExpectedRun:
    statuses: Counter[str] = field(default_factory=Counter)
    reasons_not_accepted: Counter[str] = field(default_factory=Counter)
    events: int = 0
    rows: list[CommandRows] = field(default_factory=list)

    @property
    def commands(self) -> int:
        return sum(self.statuses.values())

    @property
    def outputs_per_command(self) -> float:
        """Records the worker publishes per command: its events and one result."""
        return (self.events + self.commands) / max(1, self.commands)


def _row(value: PaymentMethod | Payment) -> dict[str, Any]:
    return {column: getattr(value, column) for column in type(value).__slots__}


class _Replay:
    def __init__(self) -> None:
        self.streams: dict[str, KeyState] = {}
        self.payments: dict[str, Payment] = {}
        self.method_owners: dict[str, str] = {}

    def state_for(self, key: str, method_ids: list[str], payment_ids: list[str]) -> KeyState:
        state = self.streams.get(key) or KeyState(key=key)
        taken = frozenset(m for m in method_ids if self.method_owners.get(m, key) != key)
        named = tuple(self.payments[p] for p in payment_ids if p in self.payments)
        return replace(state, taken_payment_method_ids=taken, payments=named)


def replay(commands: Sequence[BenchCommand], *, keep_rows: bool = True) -> ExpectedRun:
    """Decide every command in order, as one worker would, and collect the outcome."""
    run = ExpectedRun()
    world = _Replay()
    for offset, item in enumerate(commands):
        # The workload is well-formed and free of card data, so the schema models alone
        # decode it (the worker's full decoding adds the hostile-input checks).
        command = COMMAND_TYPES[item.type].model_validate_json(item.value)
        key = stream_key(command)
        if key is None:  # a guest command with no guest meaning: refused, never stored
            run.statuses["rejected"] += 1
            continue
        state = world.state_for(key, named_payment_method_ids(command), named_payment_ids(command))
        decision = decide(command, state, DECIDED_AT)
        accepted = decision.result.status == "accepted" and bool(decision.events)
        if accepted and isinstance(command, InitiatePayment):
            token = command.payload.gateway_token or ""
            answer = AuthorizationAnswer(
                approved="decline" not in token,
                authorization_id=f"auth_{offset}",
                decline_code="insufficient_funds",
            )
            decision = settle_authorization(command, decision, answer, DECIDED_AT)
        new_customer = None
        if accepted and creates_gateway_customer(command, state):
            new_customer = f"cus_{offset}"
            decision = replace(decision, customer_reference=CustomerReference(new_customer))
        if accepted and isinstance(command, EraseUserData):
            decision = replace(decision, customer_reference=CustomerReference(None))
        run.statuses[decision.result.status] += 1
        if decision.result.status != "accepted":
            run.reasons_not_accepted[decision.result.reason] += 1
        run.events += len(decision.events)

        methods = {m.payment_method_id: m for m in state.methods}
        for method in decision.changed_methods:
            methods[method.payment_method_id] = method
            world.method_owners[method.payment_method_id] = key
        customer = state.gateway_customer_id
        if decision.customer_reference is not None:
            customer = decision.customer_reference.customer_id
        world.streams[key] = KeyState(
            key=key,
            last_sequence=decision.last_sequence,
            methods=tuple(methods.values()),
            gateway_customer_id=customer,
        )
        new_payments = [p for p in decision.changed_payments if p.payment_id not in world.payments]
        changed_payments = [p for p in decision.changed_payments if p.payment_id in world.payments]
        world.payments.update({p.payment_id: p for p in decision.changed_payments})
        if not keep_rows:
            continue
        run.rows.append(
            CommandRows(
                key=key,
                inbox={
                    "command_id": command.command_id,
                    "payload_sha256": hashlib.sha256(item.value).digest(),
                    "stream_key": key,
                    "source_topic": "bench.commands",
                    "source_partition": 0,
                    "source_offset": offset,
                    "command_type": command.type,
                    "status": decision.result.status,
                    "result_value": decision.result.to_wire(),
                    "event_values": [event.to_wire() for event in decision.events],
                    "processed_at": DECIDED_AT,
                },
                methods=tuple(_row(m) for m in decision.changed_methods),
                new_payments=tuple(_row(p) for p in new_payments),
                changed_payments=tuple(_row(p) for p in changed_payments),
                last_sequence=(
                    decision.last_sequence
                    if decision.last_sequence != state.last_sequence
                    else None
                ),
                customer_id=new_customer,
            )
        )
    return run
