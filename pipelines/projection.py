"""The User Service side: a reference projection of ``payment.events`` into a view.

    payment.events ─▶ decode ─▶ fold per user (domain.projection) ─▶ Postgres at checkpoint
                          └──▶ projection DLQ (bad input)

A quixstreams application of its own (its own consumer group, exactly-once, so it
reads ``read_committed`` and its dead letters commit with its offsets). The view of
each user is folded in memory within a checkpoint and written once per checkpoint by
``CheckpointSink``, before the Kafka transaction commits. If the process dies
between the two, the events are read again and skipped by their sequence number, so
the view changes once per event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, get_args
from uuid import UUID

from pydantic import AwareDatetime, Field, ValidationError
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from quixstreams.models.serializers import SerializationContext, Serializer

from config.kafka import connection_config
from config.settings import Settings
from domain.projection import Gap, Verdict, ViewEvent, ViewPayload, advance
from pipelines.checkpoint import CheckpointSink, incoming_message
from pipelines.commit_latency import CommitLatency
from pipelines.dead_letters import dead_letter
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.records import IncomingMessage, OutgoingRecord
from pipelines.version import worker_version
from pipelines.wiring import consumer_config
from schemas.base import SCHEMA_VERSION, Identifier
from schemas.decoding import parse_json_object
from schemas.errors import InvalidMessage, InvalidReason
from schemas.events import (
    DefaultPaymentMethodChangedPayload,
    EventModel,
    EventType,
    PaymentMethodAddedPayload,
    PaymentMethodRemovedPayload,
    PaymentMethodUpdatedPayload,
    UserPaymentDataErasedPayload,
)
from state.projection_store import GapLocation, ProjectionStore
from telemetry import metrics

logger = logging.getLogger(__name__)

# The event types the view is built from, and the model of each one's payload.
VIEW_PAYLOADS: dict[str, type[ViewPayload]] = {
    "PaymentMethodAdded": PaymentMethodAddedPayload,
    "PaymentMethodUpdated": PaymentMethodUpdatedPayload,
    "PaymentMethodRemoved": PaymentMethodRemovedPayload,
    "DefaultPaymentMethodChanged": DefaultPaymentMethodChangedPayload,
    "UserPaymentDataErased": UserPaymentDataErasedPayload,
}
_KNOWN_TYPES = frozenset(get_args(EventType))


class _EventHead(EventModel):
    """The envelope without its payload: enough to place any event, even of a new type."""

    event_id: UUID
    type: Identifier
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: AwareDatetime
    user_id: Identifier | None
    sequence: int = Field(ge=1)
    payload: dict[str, Any]


def _summary(error: ValidationError) -> str:
    """Field paths and error kinds only; the values are never echoed."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or '(root)'}: {item['type']}"
        for item in error.errors(include_url=False, include_input=False)[:5]
    )


def decode_event(raw: bytes | None) -> ViewEvent | None:
    """One message of ``payment.events``; ``None`` for a guest's event (no user).

    Raises ``InvalidMessage`` for anything that is not an event envelope, or a known
    event type whose payload does not match its schema.
    """
    document = parse_json_object(raw)
    try:
        head = _EventHead.model_validate(document)
    except ValidationError as error:
        reason = (
            InvalidReason.UNSUPPORTED_SCHEMA_VERSION
            if any(item["loc"] == ("schemaVersion",) for item in error.errors())
            else InvalidReason.SCHEMA_VIOLATION
        )
        raise InvalidMessage(reason, _summary(error)) from None
    if head.user_id is None:
        return None
    model = VIEW_PAYLOADS.get(head.type)
    payload: ViewPayload | None = None
    if model is not None:
        try:
            payload = model.model_validate(head.payload)
        except ValidationError as error:
            raise InvalidMessage(InvalidReason.SCHEMA_VIOLATION, _summary(error)) from None
    return ViewEvent(
        event_id=head.event_id,
        type=head.type,
        user_id=head.user_id,
        sequence=head.sequence,
        occurred_at=head.occurred_at,
        payload=payload,
    )


class ProjectionProcessor:
    """One event message in; the view staged in the store, or a dead letter out."""

    def __init__(self, store: ProjectionStore, *, consumer_group: str, version: str) -> None:
        self._store = store
        self._consumer_group = consumer_group
        self._version = version

    def process(self, message: IncomingMessage) -> list[OutgoingRecord]:
        try:
            event = decode_event(message.value)
        except InvalidMessage as error:
            metrics.PROJECTION_EVENTS.labels("invalid").inc()
            metrics.DEAD_LETTERS.labels(str(error.reason)).inc()
            logger.warning(
                "event dead-lettered by the projection",
                extra={
                    "reason": str(error.reason),
                    "partition": message.partition,
                    "offset": message.offset,
                },
            )
            return [
                dead_letter(
                    message,
                    error,
                    consumer_group=self._consumer_group,
                    worker_version=self._version,
                )
            ]
        if event is None:
            metrics.PROJECTION_EVENTS.labels("guest").inc()
            return []
        view = self._store.view(event.user_id)
        new_view, verdict = advance(view, event)
        self._store.count_event()
        metrics.PROJECTION_EVENTS.labels(str(verdict)).inc()
        if verdict is Verdict.IGNORED:
            label = event.type if event.type in _KNOWN_TYPES else "unknown"
            metrics.PROJECTION_IGNORED_TYPES.labels(label).inc()
        if verdict is Verdict.GAP and new_view.gap is not None:
            self._report_gap(new_view.gap, message)
            self._store.stage(new_view, GapLocation(message.partition, message.offset))
        elif verdict in (Verdict.APPLIED, Verdict.IGNORED):
            self._store.stage(new_view)
        return []

    def _report_gap(self, gap: Gap, message: IncomingMessage) -> None:
        metrics.PROJECTION_GAPS.inc()
        # No user id in the log (it is personal data to the User Service): the event id
        # and the position find it in the topic and in the projection_gaps table.
        logger.error(
            "an event is missing; this user's view is held until it is rebuilt",
            extra={
                "eventId": str(gap.event_id),
                "expectedSequence": gap.expected_sequence,
                "foundSequence": gap.found_sequence,
                "partition": message.partition,
                "offset": message.offset,
            },
        )


class OutgoingValueSerializer(Serializer):
    """The processor builds the bytes itself."""

    def __call__(self, value: OutgoingRecord, ctx: SerializationContext) -> bytes:
        # A dead letter whose body is withheld is published with an empty value.
        return value.value or b""


def build_projection_pipeline(
    app: Application,
    processor: ProjectionProcessor,
    store: ProjectionStore,
    latency: CommitLatency,
    *,
    events_topic: str,
    dlq_topic: str,
) -> None:
    """Attach the projection to ``app``."""
    source = app.topic(events_topic, key_deserializer="bytes", value_deserializer="bytes")
    dlq = app.topic(dlq_topic, key_serializer="bytes", value_serializer=OutgoingValueSerializer())

    def process(
        value: bytes | None, key: bytes | None, timestamp: int, headers: Any
    ) -> list[OutgoingRecord]:
        latency.stage(timestamp)
        return processor.process(incoming_message(value, key, headers))

    records = app.dataframe(source).apply(process, metadata=True, expand=True)
    records = records.set_headers(lambda value, key, timestamp, headers: value.headers)
    records = records.to_topic(dlq, key=lambda value: value.key)
    records.sink(CheckpointSink(store, metrics.PROJECTION_CHECKPOINT_EVENTS, latency))


def build_projection(
    settings: Settings,
    store: ProjectionStore,
    on_statistics: Callable[[str], None] | None = None,
) -> Application:
    """The projection as a quixstreams application, exactly-once, on its own group."""
    producer_config = {
        **PRODUCER_DEFAULTS,
        **settings.kafka_extra_config,
        "transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
    }
    if settings.kafka_transactional_id:
        # Never the worker's own id: the two would fence each other.
        producer_config["transactional.id"] = f"{settings.kafka_transactional_id}-projection"
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(connection_config(settings)),
        consumer_extra_config={
            **consumer_config(settings, on_statistics),
            # librdkafka's default already; said here because the view depends on it:
            # events of aborted worker transactions must never be applied.
            "isolation.level": "read_committed",
        },
        consumer_group=settings.projection_consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_seconds,
        commit_every=settings.commit_every,
        processing_guarantee="exactly-once",
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=settings.quixstreams_state_dir / "projection",
        loglevel=None,
        producer_extra_config=producer_config,
    )
    latency = CommitLatency(metrics.PROJECTION_LATENCY)
    build_projection_pipeline(
        app,
        ProjectionProcessor(
            store, consumer_group=settings.projection_consumer_group, version=worker_version()
        ),
        store,
        latency,
        events_topic=settings.topic_events,
        dlq_topic=settings.projection_dlq_topic(),
    )
    return app
