"""One command message in, the records to publish out; state staged in the checkpoint.

This step owns the order of work for a message: decode (or dead-letter), look up the
inbox (re-emit a stored outcome instead of deciding again), decide, stage the change,
and return the events and the result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from domain.completion import Completion, needs_gateway
from domain.decisions import decide
from domain.errors import TransientError
from domain.model import Decision, KeyState
from domain.streams import stream_key
from pipelines.dead_letters import dead_letter
from pipelines.records import Headers, IncomingMessage, OutgoingRecord
from schemas.canonical import canonical_sha256
from schemas.commands import (
    Command,
    InitiatePayment,
    carries_personal_data,
    named_payment_ids,
    named_payment_method_ids,
)
from schemas.decoding import DEFAULT_MAX_FUTURE_SKEW, decode_command
from schemas.errors import InvalidMessage, InvalidReason
from schemas.results import CommandResult, Reason
from state.command_store import ProcessedCommand
from telemetry import metrics

logger = logging.getLogger(__name__)


class DecisionStore(Protocol):
    """What the processor needs from the store (``state.command_store.CommandStore``)."""

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None: ...

    def stored_outcome(self, command_id: UUID) -> ProcessedCommand | None: ...

    def key_state(
        self, key: str, named_payment_method_ids: Iterable[str], named_payment_ids: Iterable[str]
    ) -> KeyState: ...

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A decoded command with its stream key, waiting for its turn on that key.

    ``claims`` are the ids it may create or change beyond its own key (payment and
    payment method ids, its command id): while it waits for the gateway, a command of
    another key that names one of them waits too, so both see each other's outcome.
    """

    message: IncomingMessage
    command: Command
    key: str
    payment_method_ids: tuple[str, ...]
    payment_ids: tuple[str, ...]
    claims: frozenset[str]


@dataclass(frozen=True, slots=True)
class GatewayWork:
    """A decision that needs gateway or User Service calls before it is final."""

    admitted: Admitted
    digest: bytes
    state: KeyState
    decision: Decision
    now: datetime


def _admitted(message: IncomingMessage, command: Command, key: str) -> Admitted:
    method_ids = tuple(named_payment_method_ids(command))
    payment_ids = tuple(named_payment_ids(command))
    claims = frozenset(
        (
            f"command:{command.command_id}",
            *(f"method:{pid}" for pid in method_ids),
            *(f"payment:{pid}" for pid in payment_ids),
        )
    )
    return Admitted(message, command, key, method_ids, payment_ids, claims)


def _event_headers(event_value: bytes) -> Headers:
    document = json.loads(event_value)
    return [
        ("eventId", str(document["eventId"]).encode()),
        ("type", str(document["type"]).encode()),
        ("schemaVersion", str(document["schemaVersion"]).encode()),
    ]


class CommandProcessor:
    def __init__(
        self,
        store: DecisionStore,
        completion: Completion,
        *,
        clock: Callable[[], datetime],
        consumer_group: str,
        worker_version: str,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        self._store = store
        self._completion = completion
        self._clock = clock
        self._consumer_group = consumer_group
        self._worker_version = worker_version
        self._max_future_skew = max_future_skew

    def process(self, message: IncomingMessage) -> list[OutgoingRecord]:
        """All the stages of one message in a row, its gateway calls included (tests)."""
        admitted = self.admit(message)
        if not isinstance(admitted, Admitted):
            return admitted
        step = self.begin(admitted)
        if not isinstance(step, GatewayWork):
            return step
        try:
            decision = self.complete(step)
        except TransientError:
            raise
        except Exception as error:
            return self.failed(admitted, f"unexpected {type(error).__name__}")
        return self.finish(step, decision)

    def admit(self, message: IncomingMessage) -> Admitted | list[OutgoingRecord]:
        """Decode a message: a command to decide, or the records of a refusal (DLQ)."""
        try:
            command = decode_command(
                message.value, message.key, now=self._clock(), max_future_skew=self._max_future_skew
            )
        except InvalidMessage as error:
            return self._invalid(message, error)
        key = stream_key(command)
        if key is None:
            return self._without_stream(message, command)
        return _admitted(message, command, key)

    def begin(self, admitted: Admitted) -> GatewayWork | list[OutgoingRecord]:
        """Decide a command on its key's current state: its records when that is all,
        or the gateway work it needs first (``complete``, then ``finish``)."""
        message, command, key = admitted.message, admitted.command, admitted.key
        try:
            digest = canonical_sha256(command)
            stored = self._store.processed_command(command.command_id, key)
            if stored is not None:
                return self._redelivered(message, command, digest, stored)
            state = self._store.key_state(key, admitted.payment_method_ids, admitted.payment_ids)
            now = self._clock()
            decision = decide(command, state, now)
            if _payment_id_taken(command, decision):
                # Taken by another command, or by this very one, stored meanwhile by the
                # worker that has its partition now (the inbox was read before the
                # payment). The inbox, read after the payment, tells which: a rejection
                # cancels this command's authorization, which must not void a kept one.
                stored = self._store.stored_outcome(command.command_id)
                if stored is not None:
                    return self._redelivered(message, command, digest, stored)
            work = GatewayWork(admitted, digest, state, decision, now)
            if needs_gateway(command, decision):
                return work
            return self.finish(work, decision)
        except TransientError:
            raise
        except InvalidMessage as error:
            # PostgreSQL refused a value of this command (``state.errors``).
            return self.failed(admitted, error.detail)
        except Exception as error:
            # A deterministic failure in a rule or a client: retrying the same message
            # fails the same way, and it must not stop the worker or its partitions.
            return self.failed(admitted, f"unexpected {type(error).__name__}")

    def complete(self, work: GatewayWork) -> Decision:
        """The gateway and User Service calls of a decision; safe to run in any thread
        (it reads only the immutable state it is given)."""
        return self._completion.complete(work.admitted.command, work.state, work.decision, work.now)

    def finish(self, work: GatewayWork, decision: Decision) -> list[OutgoingRecord]:
        """Stage the final decision of a command and return its records."""
        admitted = work.admitted
        try:
            return self._publish(
                admitted.message, admitted.command, admitted.key, work.digest, decision
            )
        except TransientError:
            raise
        except InvalidMessage as error:
            return self.failed(admitted, error.detail)
        except Exception as error:
            return self.failed(admitted, f"unexpected {type(error).__name__}")

    def failed(self, admitted: Admitted, detail: str) -> list[OutgoingRecord]:
        """A command that cannot be processed: dead-lettered as ``processing_failed``."""
        return self._failed(admitted.message, admitted.command, detail)

    def _without_stream(self, message: IncomingMessage, command: Command) -> list[OutgoingRecord]:
        """A guest command with no guest meaning: its rule refuses it on an empty state,
        before any store is touched, and the refusal (which depends on nothing stored)
        is published without an inbox row."""
        decision = decide(command, KeyState(key=""), self._clock())
        if decision.result.status != "rejected" or decision.events:
            return self._failed(message, command, "a guest command was not refused")
        metrics.COMMANDS.labels(command.type, "rejected").inc()
        return [OutgoingRecord("results", message.key, decision.result.to_wire(), [])]

    def _failed(
        self, message: IncomingMessage, command: Command, detail: str
    ) -> list[OutgoingRecord]:
        logger.error(
            "command could not be processed; dead-lettered",
            extra={"commandId": str(command.command_id), "type": command.type, "error": detail},
        )
        return self._invalid(
            message,
            InvalidMessage(
                InvalidReason.PROCESSING_FAILED,
                detail,
                command_id=str(command.command_id),
                command_type=command.type,
                # Personal data (a name, an email) must not stay in an unerasable topic.
                withhold_body=carries_personal_data(command),
            ),
        )

    def _publish(
        self,
        message: IncomingMessage,
        command: Command,
        key: str,
        digest: bytes,
        decision: Decision,
    ) -> list[OutgoingRecord]:
        event_values = tuple(event.to_wire() for event in decision.events)
        result_value = decision.result.to_wire()
        self._store.record(
            ProcessedCommand(
                command_id=command.command_id,
                payload_sha256=digest,
                stream_key=key,
                source_topic=message.topic,
                source_partition=message.partition,
                source_offset=message.offset,
                command_type=command.type,
                status=decision.result.status,
                result_value=result_value,
                event_values=event_values,
                processed_at=self._clock(),
            ),
            key,
            decision,
        )
        metrics.COMMANDS.labels(command.type, decision.result.status).inc()
        logger.debug(
            "command decided",
            extra={
                "commandId": str(command.command_id),
                "type": command.type,
                "status": decision.result.status,
                "reason": decision.result.reason,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        return [
            *(
                OutgoingRecord("events", message.key, value, event.kafka_headers())
                for event, value in zip(decision.events, event_values, strict=True)
            ),
            OutgoingRecord("results", message.key, result_value, []),
        ]

    def _redelivered(
        self, message: IncomingMessage, command: Command, digest: bytes, stored: ProcessedCommand
    ) -> list[OutgoingRecord]:
        if stored.payload_sha256 != digest:
            metrics.COMMANDS.labels(command.type, "rejected").inc()
            logger.warning(
                "command id reused with a different payload",
                extra={"commandId": str(command.command_id), "offset": message.offset},
            )
            conflict = CommandResult(
                command_id=command.command_id,
                correlation_id=command.correlation_id,
                type=command.type,
                status="rejected",
                reason=Reason.COMMAND_ID_CONFLICT,
                event_ids=[],
            )
            return [OutgoingRecord("results", message.key, conflict.to_wire(), [])]
        metrics.REPLAYED_OUTCOMES.inc()
        result = OutgoingRecord("results", message.key, stored.result_value, [])
        if (stored.source_topic, stored.source_partition, stored.source_offset) != (
            message.topic,
            message.partition,
            message.offset,
        ):
            # Another copy of a command decided earlier (a producer retry, a DLQ replay):
            # its events are already published, so only the result is repeated.
            return [result]
        # The very message that was decided, delivered again: Postgres committed but the
        # Kafka transaction did not (a crash in between), so publish the stored outcome
        # exactly as it was decided, never deciding again.
        return [
            *(
                OutgoingRecord("events", message.key, value, _event_headers(value))
                for value in stored.event_values
            ),
            result,
        ]

    def _invalid(self, message: IncomingMessage, error: InvalidMessage) -> list[OutgoingRecord]:
        metrics.DEAD_LETTERS.labels(str(error.reason)).inc()
        key = None if error.withhold_key else message.key
        metrics.COMMANDS.labels(error.command_type or "unknown", "invalid").inc()
        logger.warning(
            "message dead-lettered",
            extra={
                "reason": str(error.reason),
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        result = CommandResult(
            command_id=_uuid_or_none(error.command_id),
            type=error.command_type,
            status="invalid",
            reason=str(error.reason),
            event_ids=[],
        )
        return [
            dead_letter(
                message,
                error,
                consumer_group=self._consumer_group,
                worker_version=self._worker_version,
            ),
            OutgoingRecord("results", key, result.to_wire(), []),
        ]


def _payment_id_taken(command: Command, decision: Decision) -> bool:
    return (
        isinstance(command, InitiatePayment)
        and decision.result.status == "rejected"
        and decision.result.reason == Reason.PAYMENT_ID_TAKEN
    )


def _uuid_or_none(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
