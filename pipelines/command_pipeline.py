"""The command pipeline as a quixstreams application, exactly-once.

    payment.commands ─▶ process (decode, inbox, decide, stage) ─▶ events / results / DLQ
                                                            └──▶ Postgres at checkpoint

Every record a command produces, and the consumer offset, go into one Kafka
transaction per checkpoint. The checkpoint first writes the staged Postgres changes
(the ``CheckpointSink``), then commits the Kafka transaction; see DESIGN.md §5.
"""

from __future__ import annotations

import time
from typing import Any

from quixstreams import Application, message_context
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.sinks import BaseSink

from pipelines import metrics
from pipelines.command_processor import CommandProcessor
from pipelines.records import Destination, IncomingMessage, OutgoingRecord
from state.command_store import CommandStore


class OutgoingValueSerializer(Serializer):
    """The pipeline builds the bytes itself (they are also stored in the inbox)."""

    def __call__(self, value: OutgoingRecord, ctx: SerializationContext) -> bytes:
        # A dead letter whose body is withheld is published with an empty value.
        return value.value or b""


class CheckpointSink(BaseSink):
    """Writes the checkpoint's staged decisions to Postgres before Kafka commits.

    ``add`` does nothing: the processor stages each decision itself, because the next
    command of the same user must already see it. quixstreams calls ``flush`` at every
    checkpoint, before the Kafka transaction commits, and a failure aborts that commit.
    """

    def __init__(self, store: CommandStore) -> None:
        super().__init__()
        self._store = store

    def add(self, *args: Any, **kwargs: Any) -> None:
        return None

    def flush(self) -> None:
        started = time.perf_counter()
        written = self._store.flush()
        if written:
            metrics.CHECKPOINT_COMMANDS.observe(written)
            metrics.CHECKPOINT_WRITE_SECONDS.observe(time.perf_counter() - started)

    def on_paused(self) -> None:
        self._store.discard()


def _incoming(value: bytes | None, key: bytes | None, headers: Any) -> IncomingMessage:
    context = message_context()
    return IncomingMessage(
        topic=context.topic,
        partition=context.partition,
        offset=context.offset,
        key=key,
        value=value,
        headers=[(name, bytes(data or b"")) for name, data in (headers or [])],
    )


def build_command_pipeline(
    app: Application,
    processor: CommandProcessor,
    store: CommandStore,
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

    records = app.dataframe(source).apply(
        lambda value, key, timestamp, headers: processor.process(_incoming(value, key, headers)),
        metadata=True,
        expand=True,
    )
    records = records.set_headers(lambda value, key, timestamp, headers: value.headers)
    records = records.to_topic(
        lambda value, key, timestamp, headers: outputs[value.destination],
        key=lambda value: value.key,
    )
    records.sink(CheckpointSink(store))
