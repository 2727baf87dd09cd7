"""The projection's quixstreams sink that writes a checkpoint's staged state to Postgres,
and the consumed message with where it came from."""

from __future__ import annotations

import time
from typing import Any, Protocol

from prometheus_client import Histogram
from quixstreams import message_context
from quixstreams.sinks import BaseSink

from pipelines.commit_latency import CommitLatency
from pipelines.records import IncomingMessage
from telemetry import metrics


class StagedStore(Protocol):
    """A per-checkpoint unit of work (``CommandStore``, ``ProjectionStore``)."""

    def flush(self) -> int: ...

    def discard(self) -> None: ...


class CheckpointSink(BaseSink):
    """Writes the checkpoint's staged state to Postgres before the Kafka transaction commits.

    ``add`` does nothing: the processor stages each change itself, because the next
    message of the same key must already see it. quixstreams flushes every registered
    sink at each checkpoint, before the Kafka transaction commits, whether or not records
    reached it, and a failure aborts that commit.
    """

    def __init__(
        self, store: StagedStore, batch_size: Histogram, latency: CommitLatency | None = None
    ) -> None:
        super().__init__()
        self._store = store
        self._batch_size = batch_size
        self._latency = latency

    def add(self, *args: Any, **kwargs: Any) -> None:
        return None

    def flush(self) -> None:
        started = time.perf_counter()
        written = self._store.flush()
        if written:
            self._batch_size.observe(written)
            metrics.CHECKPOINT_WRITE_SECONDS.observe(time.perf_counter() - started)
        if self._latency is not None:
            # quixstreams offers no public hook after its Kafka commit, which follows.
            self._latency.committed()

    def on_paused(self) -> None:
        self._store.discard()
        if self._latency is not None:
            self._latency.aborted()


def incoming_message(value: bytes | None, key: bytes | None, headers: Any) -> IncomingMessage:
    """The message being processed, with its topic, partition and offset."""
    context = message_context()
    return IncomingMessage(
        topic=context.topic,
        partition=context.partition,
        offset=context.offset,
        key=key,
        value=value,
        headers=[(name, bytes(data or b"")) for name, data in (headers or [])],
    )
