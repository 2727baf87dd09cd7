"""The command pipeline as a quixstreams application, exactly-once.

    payment.commands ─▶ process (decode, inbox, decide, stage) ─▶ events / results / DLQ
                                                            └──▶ Postgres at checkpoint

Every record a command produces, and the consumer offset, go into one Kafka
transaction per checkpoint. The checkpoint first writes the staged Postgres changes
(the ``CheckpointSink``), then commits the Kafka transaction; see DESIGN.md §5.
"""

from __future__ import annotations

from typing import Any

from quixstreams import Application
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer

from pipelines import metrics
from pipelines.checkpoint import CheckpointSink, incoming_message
from pipelines.command_processor import CommandProcessor
from pipelines.kafka_transactions import CommitLatency
from pipelines.records import Destination, OutgoingRecord
from state.command_store import CommandStore


class OutgoingValueSerializer(Serializer):
    """The pipeline builds the bytes itself (they are also stored in the inbox)."""

    def __call__(self, value: OutgoingRecord, ctx: SerializationContext) -> bytes:
        # A dead letter whose body is withheld is published with an empty value.
        return value.value or b""


def build_command_pipeline(
    app: Application,
    processor: CommandProcessor,
    store: CommandStore,
    latency: CommitLatency,
    *,
    commands_topic: str,
    output_topics: dict[Destination, str],
) -> None:
    """Attach the command pipeline to ``app``."""
    source = app.topic(commands_topic, key_deserializer="bytes", value_deserializer="bytes")
    serializer = OutgoingValueSerializer()
    outputs: dict[str, Topic] = {
        destination: app.topic(name, key_serializer="bytes", value_serializer=serializer)
        for destination, name in output_topics.items()
    }

    def process(
        value: bytes | None, key: bytes | None, timestamp: int, headers: Any
    ) -> list[OutgoingRecord]:
        latency.stage(timestamp)
        return processor.process(incoming_message(value, key, headers))

    records = app.dataframe(source).apply(process, metadata=True, expand=True)
    records = records.set_headers(lambda value, key, timestamp, headers: value.headers)
    records = records.to_topic(
        lambda value, key, timestamp, headers: outputs[value.destination],
        key=lambda value: value.key,
    )
    records.sink(CheckpointSink(store, metrics.CHECKPOINT_COMMANDS))
