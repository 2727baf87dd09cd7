"""One command message in, the records to publish out; state staged in the checkpoint.

This step owns the order of work for a message: decode (or dead-letter), look up the
inbox (re-emit a stored outcome instead of deciding again), decide, stage the change,
and return the events and the result.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from domain.decisions import decide
from domain.errors import InvalidMessage, InvalidReason, TransientError
from domain.model import Decision, StreamState
from domain.streams import stream_key
from pipelines import metrics
from pipelines.dead_letters import dead_letter
from pipelines.gateway_effects import GatewayEffects
from pipelines.records import Headers, IncomingMessage, OutgoingRecord
from schemas.commands import (
    Command,
    carries_personal_data,
    named_payment_ids,
    named_payment_method_ids,
)
from schemas.canonical import canonical_sha256
from schemas.decoding import DEFAULT_MAX_FUTURE_SKEW, decode_command
from schemas.results import CommandResult, Reason
from state.command_store import ProcessedCommand

logger = logging.getLogger(__name__)


class DecisionStore(Protocol):
    """What the processor needs from the store (``state.command_store.CommandStore``)."""

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None: ...

    def stream_state(
        self, key: str, named_payment_method_ids: Iterable[str], named_payment_ids: Iterable[str]
    ) -> StreamState: ...

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None: ...


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
        effects: GatewayEffects,
        *,
        clock: Callable[[], datetime],
        consumer_group: str,
        worker_version: str,
        max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    ) -> None:
        self._store = store
        self._effects = effects
        self._clock = clock
        self._consumer_group = consumer_group
        self._worker_version = worker_version
        self._max_future_skew = max_future_skew

    def process(self, message: IncomingMessage) -> list[OutgoingRecord]:
        try:
            command = decode_command(
                message.value, message.key, now=self._clock(), max_future_skew=self._max_future_skew
            )
        except InvalidMessage as error:
            return self._invalid(message, error)
        key = stream_key(command)
        if key is None:
            return self._without_stream(message, command)
        try:
            return self._decide(message, command, key)
        except TransientError:
            raise
        except InvalidMessage as error:
            # PostgreSQL refused a value of this command (``state.errors``).
            return self._failed(message, command, error.detail)
        except Exception as error:
            # A deterministic failure in a rule or a client: retrying the same message
            # fails the same way, and it must not stop the worker or its partitions.
            return self._failed(message, command, f"unexpected {type(error).__name__}")

    def _decide(self, message: IncomingMessage, command: Command, key: str) -> list[OutgoingRecord]:
        digest = canonical_sha256(command)
        stored = self._store.processed_command(command.command_id, key)
        if stored is not None:
            return self._redelivered(message, command, digest, stored)

        state = self._store.stream_state(
            key, named_payment_method_ids(command), named_payment_ids(command)
        )
        now = self._clock()
        decision = self._effects.apply(command, state, decide(command, state, now), now)
        return self._publish(message, command, key, digest, decision)

    def _without_stream(self, message: IncomingMessage, command: Command) -> list[OutgoingRecord]:
        """A guest command with no guest meaning: its rule refuses it on an empty state,
        before any store is touched, and the refusal (which depends on nothing stored)
        is published without an inbox row."""
        decision = decide(command, StreamState(key=""), self._clock())
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


def _uuid_or_none(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        return None
