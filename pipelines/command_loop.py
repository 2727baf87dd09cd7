"""The command pipeline: batches in, one PostgreSQL write and one Kafka transaction out.

    consume a batch ─▶ decode ─▶ read inbox + key states (one query each)
        ─▶ decide per key in offset order, gateway calls concurrent across keys
        ─▶ write PostgreSQL once ─▶ one Kafka transaction: events, results, dead
           letters and the consumer offsets (KIP-447)

It is built on confluent-kafka's transactional producer and consumer directly, the
pattern of librdkafka's ``examples/transactions.c``: quixstreams processes one message at
a time and has no public way to run a batch, carry a key to the next batch or observe
its commits (docs/decisions/0009). Any failure aborts the transaction and rewinds the
consumer to the committed offsets; PostgreSQL's inbox makes the redelivered commands
re-emit what they stored instead of deciding again (DESIGN.md §5).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from domain.errors import TransientError
from pipelines.command_processor import Admitted, CommandProcessor
from pipelines.commit_latency import CommitLatency
from pipelines.key_scheduler import KeyScheduler
from pipelines.offset_progress import PartitionProgress, decode_done
from pipelines.records import Destination, IncomingMessage, OutgoingRecord
from state.command_store import CommandStore
from telemetry import metrics

logger = logging.getLogger(__name__)

KAFKA_TIMEOUT_SECONDS = 30.0
REWIND_DELAY_SECONDS = 0.5
REWIND_DELAY_MAX_SECONDS = 30.0

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True)
class BatchLimits:
    max_messages: int
    max_wait_seconds: float
    deadline_seconds: float
    max_carried_offsets: int
    max_carried_commands: int


class RewindNeeded(Exception):
    """The current batch cannot be committed; go back to the last commit."""


class CommandLoop:
    """One worker's command pipeline; ``run`` until ``stop``."""

    def __init__(
        self,
        *,
        consumer_config: dict[str, Any],
        producer_config: dict[str, Any],
        commands_topic: str,
        output_topics: dict[Destination, str],
        processor: CommandProcessor,
        store: CommandStore,
        limits: BatchLimits,
        max_in_flight: int,
        auto_offset_reset: str,
    ) -> None:
        self._consumer_config = consumer_config
        self._producer_config = producer_config
        self._commands_topic = commands_topic
        self._output_topics = output_topics
        self._processor = processor
        self._store = store
        self._limits = limits
        self._auto_offset_reset = auto_offset_reset
        self._stopping = threading.Event()
        self._progress: dict[TopicPartitionKey, PartitionProgress] = {}
        self._paused: set[TopicPartitionKey] = set()
        self._saturated = False
        self._in_transaction = False
        self._finished: list[tuple[IncomingMessage, list[OutgoingRecord]]] = []
        # Kafka timestamps of consumed commands until they finish (for the latency metric).
        self._timestamps: dict[tuple[str, int, int], int] = {}
        self._latency = CommitLatency(metrics.PROCESSING_LATENCY)
        self._scheduler = KeyScheduler(processor, max_in_flight=max_in_flight)

    def stop(self) -> None:
        """Finish the current batch, commit it and leave the group (any thread)."""
        self._stopping.set()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        producer = Producer(self._producer_config)
        producer.init_transactions(KAFKA_TIMEOUT_SECONDS)
        consumer = Consumer(self._consumer_config)
        consumer.subscribe(
            [self._commands_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_given_up,
            on_lost=self._on_given_up,
        )
        logger.info(
            "command pipeline started",
            extra={
                "batchMaxMessages": self._limits.max_messages,
                "batchDeadlineSeconds": self._limits.deadline_seconds,
                "maxInFlight": self._scheduler.max_in_flight,
            },
        )
        delay = REWIND_DELAY_SECONDS
        try:
            while not self._stopping.is_set():
                try:
                    self._batch(consumer, producer, consume=True)
                    delay = REWIND_DELAY_SECONDS
                except (TransientError, RewindNeeded) as error:
                    self._rewind(consumer, producer, error)
                    if self._stopping.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311
                        break
                    delay = min(delay * 2, REWIND_DELAY_MAX_SECONDS)
            self._drain(consumer, producer)
        finally:
            self._scheduler.close()
            self._store.discard()
            consumer.close()

    def _drain(self, consumer: Consumer, producer: Producer) -> None:
        """On stop: let running calls answer within one deadline, and commit what is done.

        Commands still waiting are not committed; the next owner of their partition
        consumes them again, and their calls repeat with the same idempotency keys.
        """
        try:
            self._batch(consumer, producer, consume=False)
        except (TransientError, RewindNeeded) as error:
            self._rewind(consumer, producer, error)

    def _batch(self, consumer: Consumer, producer: Producer, *, consume: bool) -> None:
        if consume:
            messages = consumer.consume(
                num_messages=self._limits.max_messages, timeout=self._limits.max_wait_seconds
            )
            admitted = self._admit(messages)
            # What the batch's and the carried commands name is read now, in one query
            # each: a carried command is decided after the previous batch's write.
            waiting = self._scheduler.waiting()
            if waiting:
                self._store.prefetch(
                    (a.key for a in admitted),
                    (a.command.command_id for a in admitted),
                    (pid for a in waiting for pid in a.payment_method_ids),
                    (pid for a in waiting for pid in a.payment_ids),
                )
        started = time.monotonic()
        self._scheduler.run(started + self._limits.deadline_seconds, self._finish)
        self._pause_or_resume(consumer)
        self._commit(consumer, producer)

    def _admit(self, messages: list[Message]) -> list[Admitted]:
        admitted: list[Admitted] = []
        keys: set[str] = set()
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise KafkaException(error)
                logger.warning("consumer error", extra={"error": str(error)})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue
            progress = self._progress.get((topic, partition))
            if progress is None:
                # No committed offset yet: this is where the partition starts for us.
                progress = self._progress[(topic, partition)] = PartitionProgress(offset)
            if progress.already_done(offset):
                progress.skipped(offset)
                continue
            progress.consumed(offset)
            self._timestamps[(topic, partition, offset)] = message.timestamp()[1]
            incoming = IncomingMessage(
                topic=topic,
                partition=partition,
                offset=offset,
                key=message.key(),
                value=message.value(),
                headers=[(name, bytes(data or b"")) for name, data in message.headers() or []],
            )
            step = self._processor.admit(incoming)
            if isinstance(step, Admitted):
                self._scheduler.add(step)
                admitted.append(step)
                keys.add(step.key)
            elif not self._scheduler.add_ready(incoming, step):
                self._finish(incoming, step)
        metrics.BATCH_MESSAGES.observe(len(messages))
        if keys:
            metrics.BATCH_KEYS.observe(len(keys))
        return admitted

    def _finish(self, message: IncomingMessage, records: list[OutgoingRecord]) -> None:
        progress = self._progress.get((message.topic, message.partition))
        if progress is None:
            return  # its partition was given up: the next owner decides it again
        progress.finish(message.offset)
        self._finished.append((message, records))
        timestamp = self._timestamps.pop((message.topic, message.partition, message.offset), 0)
        if timestamp > 0:
            self._latency.stage(timestamp)

    def _commit(self, consumer: Consumer, producer: Producer) -> None:
        """PostgreSQL first, then the Kafka transaction with the offsets; see the module."""
        points = {tp: point for tp, p in self._progress.items() if (point := p.news())}
        if not points:
            return
        started = time.perf_counter()
        written = self._store.flush()
        if written:
            metrics.CHECKPOINT_COMMANDS.observe(written)
            metrics.CHECKPOINT_WRITE_SECONDS.observe(time.perf_counter() - started)
        offsets = [
            TopicPartition(topic, partition, offset, metadata=metadata)
            for (topic, partition), (offset, metadata) in points.items()
        ]
        try:
            producer.begin_transaction()
            self._in_transaction = True
            for _, records in self._finished:
                for record in records:
                    self._produce(producer, record)
            group = consumer.consumer_group_metadata()
            # A timeout leaves the outcome open (the commit may have reached the
            # coordinator): the call is repeated until it gives a definite answer, never
            # followed by an abort, which could rewind past a commit that did happen.
            _until_definite(
                lambda: producer.send_offsets_to_transaction(offsets, group, KAFKA_TIMEOUT_SECONDS)
            )
            _until_definite(lambda: producer.commit_transaction(KAFKA_TIMEOUT_SECONDS))
        except KafkaException as failure:
            metrics.KAFKA_TRANSACTIONS.labels("failed").inc()
            error: KafkaError = failure.args[0]
            if error.txn_requires_abort():
                raise RewindNeeded(f"the Kafka transaction failed: {error.str()}") from failure
            # Fatal (fenced) or a state the producer cannot leave: the pipeline restarts
            # with new clients; the same transactional id fences this producer first.
            raise
        self._in_transaction = False
        metrics.KAFKA_TRANSACTIONS.labels("committed").inc()
        for tp, (offset, _) in points.items():
            self._progress[tp].committed_now(offset)
        self._latency.committed()
        self._finished.clear()

    def _produce(self, producer: Producer, record: OutgoingRecord) -> None:
        topic = self._output_topics[record.destination]
        while True:
            try:
                producer.produce(
                    topic, value=record.value or b"", key=record.key, headers=record.headers
                )
                return
            except BufferError:
                # The local queue is full: let librdkafka send some, then go on.
                producer.poll(0.05)

    # --- failures and rebalances --------------------------------------------------------

    def _rewind(self, consumer: Consumer, producer: Producer, error: Exception) -> None:
        """Abort, forget everything uncommitted and seek back to the committed offsets."""
        metrics.PIPELINE_RESTARTS.inc()
        logger.warning(
            "the batch is abandoned; going back to the last commit",
            extra={"error": str(error), "errorType": type(error).__name__},
        )
        if self._in_transaction:
            # Until it is certainly aborted: only then are the committed offsets final.
            _until_definite(lambda: producer.abort_transaction(KAFKA_TIMEOUT_SECONDS))
            self._in_transaction = False
            metrics.KAFKA_TRANSACTIONS.labels("aborted").inc()
        self._finished.clear()
        self._timestamps.clear()
        self._latency.aborted()
        self._scheduler.clear()
        self._store.discard()
        self._store.forget_cached()
        assignment = consumer.assignment()
        if not assignment:
            self._progress.clear()
            return
        self._load_progress(consumer, assignment)
        for tp in assignment:
            progress = self._progress.get((tp.topic, tp.partition))
            offset = progress.committed if progress is not None else self._reset_offset()
            consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _reset_offset(self) -> int:
        return int(OFFSET_BEGINNING if self._auto_offset_reset == "earliest" else OFFSET_END)

    def _load_progress(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=KAFKA_TIMEOUT_SECONDS)
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.offset < 0:
                # Nothing committed yet: the partition starts where this worker first
                # consumed it (kept across a rewind), else where the consumer starts.
                before = self._progress.get(key)
                if before is not None:
                    self._progress[key] = PartitionProgress(before.committed)
                continue
            self._progress[key] = PartitionProgress(tp.offset, decode_done(tp.offset, tp.metadata))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._load_progress(consumer, partitions)

    def _on_given_up(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions revoked or lost: their carried commands belong to the next owner.

        Nothing uncommitted is lost: the loop commits at the end of every batch, so what
        is left here was never published, and is consumed again by whoever gets them.
        """
        given_up = {(tp.topic, tp.partition) for tp in partitions}
        for key in given_up:
            self._progress.pop(key, None)
            self._paused.discard(key)
        self._timestamps = {k: v for k, v in self._timestamps.items() if k[:2] not in given_up}
        self._scheduler.drop(lambda message: (message.topic, message.partition) in given_up)
        # Other workers may write these keys now (the writes are fenced anyway).
        self._store.forget_cached()

    def _pause_or_resume(self, consumer: Consumer) -> None:
        """Back-pressure: stop fetching while too much is carried, and start again below half.

        All partitions pause when the carried commands reach ``max_carried_commands`` (the
        gateway cannot keep up, or keys are held); one partition pauses when its carried
        span reaches ``max_carried_offsets`` (the bound of its offset metadata). The loop
        keeps polling while paused, so the worker stays in its group.
        """
        carried = self._scheduler.carried
        limit = self._limits.max_carried_commands
        if carried >= limit:
            self._saturated = True
        elif carried < limit // 2:
            self._saturated = False
        span_limit = self._limits.max_carried_offsets
        wanted: set[TopicPartitionKey] = set()
        for key, progress in self._progress.items():
            span = progress.carried_span
            # A partition paused for its span resumes below half of it.
            still = key in self._paused and span >= span_limit // 2
            if self._saturated or span >= span_limit or still:
                wanted.add(key)
        to_pause = wanted - self._paused
        to_resume = self._paused - wanted
        if to_pause:
            consumer.pause([TopicPartition(t, p) for t, p in to_pause])
        if to_resume:
            consumer.resume([TopicPartition(t, p) for t, p in to_resume])
        self._paused = wanted


def _until_definite(call: Callable[[], object]) -> None:
    """Call a transactional producer method again while it fails retriably (a timeout)."""
    while True:
        try:
            call()
            return
        except KafkaException as failure:
            error: KafkaError = failure.args[0]
            if not error.retriable() or error.txn_requires_abort() or error.fatal():
                raise
            logger.warning(
                "a Kafka transaction call timed out; repeating it", extra={"error": error.str()}
            )
