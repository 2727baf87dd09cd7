"""What the worker should do with a workload, from the real domain rules, in memory.

Replaying the commands through ``decide`` and ``Completion`` (with an in-memory gateway
that answers as the sandbox does)
tells how many events and results each command yields, which sets the fan-out of the
raw Kafka baseline, checks that the workload is mostly accepted, and gives the exact
rows the worker writes to Postgres, for the database baseline.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bench.workload import BenchCommand
from domain.completion import Completion
from domain.decisions import decide
from domain.model import Payment, PaymentMethod
from domain.streams import stream_key
from schemas.commands import COMMAND_TYPES, named_payment_ids, named_payment_method_ids
from tests.support.fakes import FixedProfiles, MemoryGateway, MemoryStore

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


def replay(commands: Sequence[BenchCommand], *, keep_rows: bool = True) -> ExpectedRun:
    """Decide and complete every command in order, as one worker would, with a gateway
    that answers as the sandbox does, and collect the outcome."""
    run = ExpectedRun()
    store = MemoryStore()
    completion = Completion(MemoryGateway(remember=False), FixedProfiles())
    for offset, item in enumerate(commands):
        # The workload is well-formed and free of card data, so the schema models alone
        # decode it (the worker's full decoding adds the hostile-input checks).
        command = COMMAND_TYPES[item.type].model_validate_json(item.value)
        key = stream_key(command)
        if key is None:  # a guest command with no guest meaning: refused, never stored
            run.statuses["rejected"] += 1
            continue
        state = store.key_state(key, named_payment_method_ids(command), named_payment_ids(command))
        decision = completion.complete(
            command, state, decide(command, state, DECIDED_AT), DECIDED_AT
        )
        run.statuses[decision.result.status] += 1
        if decision.result.status != "accepted":
            run.reasons_not_accepted[decision.result.reason] += 1
        run.events += len(decision.events)
        new_payments = [p for p in decision.changed_payments if p.payment_id not in store.payments]
        changed_payments = [p for p in decision.changed_payments if p.payment_id in store.payments]
        store.apply(key, decision)
        if not keep_rows:
            continue
        reference = decision.customer_reference
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
                customer_id=reference.customer_id if reference is not None else None,
            )
        )
    return run
