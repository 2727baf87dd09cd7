"""The baselines the worker is compared with, on the same broker and database.

- raw: a plain confluent-kafka consume → produce loop, transactional, one transaction per
  consumed batch with the offsets in it; per command it publishes one record to the
  results topic and, on average, as many to the events topic as the worker does.
- passthrough: a quixstreams pipeline ``dataframe(topic).apply(...).to_topic(...)``,
  exactly-once, with the worker's commit interval; one output per input.
- database: the rows the worker writes (inbox, payment methods, payments, gateway
  customers, event streams), written in batches of the worker's checkpoint size, without
  Kafka.

The two Kafka baselines run as child processes (``python -m bench.baselines raw|passthrough``,
settings from the ``PAYMENT_WORKER_*`` environment), like the worker itself.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from sqlalchemy import Engine, update
from sqlalchemy.dialects.postgresql import insert

from bench.expected import CommandRows
from bench.harness import REPOSITORY, settings_environment
from config.kafka import connection_config, librdkafka_config
from config.settings import ENV_PREFIX, Settings, load_settings
from domain.streams import stream_user_id
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from state.tables import (
    gateway_customers,
    payment_methods,
    payments,
    processed_commands,
    stream_sequences,
)

# Spreads the fractional part of the fan-out evenly over offsets (golden ratio).
_SPREAD = (math.sqrt(5) - 1) / 2


class BaselineProcess:
    """``python -m bench.baselines <name>`` as a child process, with its log in a file."""

    def __init__(self, settings: Settings, name: str, log_path: Path, args: Sequence[str]) -> None:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
            **settings_environment(settings),
        }
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "bench.baselines", name, *args],
                cwd=REPOSITORY,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self._process.pid

    def is_running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode


# --- A: the raw confluent-kafka loop ---------------------------------------------------------


def outputs_for(offset: int, fanout: float) -> int:
    """How many records the raw loop publishes for the input at ``offset`` (≥ 1)."""
    whole = int(fanout)
    extra = 1 if (offset * _SPREAD) % 1.0 < fanout - whole else 0
    return max(1, whole + extra)


def run_raw_loop(settings: Settings, *, fanout: float, expect: int) -> None:
    """Consume a batch, publish its outputs and offsets in one transaction, repeat."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": settings.consumer_group,
            "enable.auto.commit": "false",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    producer = Producer(
        {
            **librdkafka_config(settings),
            **PRODUCER_DEFAULTS,
            "transactional.id": f"{settings.consumer_group}-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
            "linger.ms": "5",
        }
    )
    producer.init_transactions(30)
    consumer.subscribe([settings.topic_commands])
    batch_size = settings.commit_every or 5000
    done = 0
    try:
        while done < expect:
            messages = consumer.consume(
                num_messages=batch_size, timeout=settings.commit_interval_seconds
            )
            messages = [m for m in messages if m.error() is None]
            if not messages:
                continue
            producer.begin_transaction()
            for message in messages:
                key, value = message.key(), message.value()
                producer.produce(settings.topic_results, key=key, value=value)
                for _ in range(outputs_for(message.offset(), fanout) - 1):
                    producer.produce(settings.topic_events, key=key, value=value)
                producer.poll(0)
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
            done += len(messages)
    finally:
        consumer.close()


# --- B: the quixstreams pass-through --------------------------------------------------------


def run_passthrough(settings: Settings) -> None:
    """``apply`` → ``to_topic``, exactly-once, committing like the worker."""
    app = Application(
        broker_address=ConnectionConfig.from_librdkafka_dict(connection_config(settings)),
        consumer_group=settings.consumer_group,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_seconds,
        commit_every=settings.commit_every,
        processing_guarantee="exactly-once",
        auto_create_topics=False,
        use_changelog_topics=False,
        state_dir=settings.quixstreams_state_dir / settings.consumer_group,
        loglevel="WARNING",
        producer_extra_config={
            **PRODUCER_DEFAULTS,
            "transaction.timeout.ms": str(settings.kafka_transaction_timeout_ms),
        },
    )
    source = app.topic(
        settings.topic_commands, key_deserializer="bytes", value_deserializer="bytes"
    )
    output = app.topic(settings.topic_results, key_serializer="bytes", value_serializer="bytes")
    app.dataframe(source).apply(lambda value: value).to_topic(output)
    app.run()


# --- C: batched Postgres writes -------------------------------------------------------------


def write_batches(engine: Engine, rows: Sequence[CommandRows], batch_size: int) -> float:
    """Write ``rows`` in transactions of ``batch_size`` commands; returns the seconds taken.

    Each transaction inserts the inbox rows and new payments, upserts the payment
    methods (last change per method wins, rows giving up a default first, as the
    unique indexes require), links changed payments, upserts gateway customers and the
    last event sequence per key: the statements a checkpoint of the worker needs.
    """
    started = time.perf_counter()
    method_statement = insert(payment_methods)
    method_upsert = method_statement.on_conflict_do_update(
        index_elements=[payment_methods.c.payment_method_id],
        set_={
            column.name: method_statement.excluded[column.name]
            for column in payment_methods.columns
            if column.name not in ("payment_method_id", "user_id", "created_at")
        },
    )
    sequence_statement = insert(stream_sequences)
    sequence_upsert = sequence_statement.on_conflict_do_update(
        index_elements=[stream_sequences.c.stream_key],
        set_={"last_sequence": sequence_statement.excluded.last_sequence},
    )
    customer_statement = insert(gateway_customers)
    customer_upsert = customer_statement.on_conflict_do_update(
        index_elements=[gateway_customers.c.user_id],
        set_={"customer_id": customer_statement.excluded.customer_id},
    )
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        methods: dict[str, dict[str, object]] = {}
        new_payments: dict[str, dict[str, object]] = {}
        changed_payments: dict[str, dict[str, object]] = {}
        sequences: dict[str, int] = {}
        customers: dict[str, str] = {}
        for command in batch:
            methods.update({str(m["payment_method_id"]): m for m in command.methods})
            for payment in command.new_payments:
                new_payments[str(payment["payment_id"])] = payment
            for payment in command.changed_payments:
                target = new_payments if payment["payment_id"] in new_payments else changed_payments
                target[str(payment["payment_id"])] = payment
            if command.last_sequence is not None:
                sequences[command.key] = command.last_sequence
            user_id = stream_user_id(command.key)
            if command.customer_id is not None and user_id is not None:
                customers[user_id] = command.customer_id
        with engine.begin() as connection:
            connection.execute(insert(processed_commands), [c.inbox for c in batch])
            if methods:
                ordered = sorted(
                    methods.values(), key=lambda m: (bool(m["is_default"]), bool(m["active"]))
                )
                connection.execute(method_upsert, ordered)
            if new_payments:
                connection.execute(insert(payments), list(new_payments.values()))
            for payment in changed_payments.values():
                connection.execute(
                    update(payments)
                    .where(payments.c.payment_id == payment["payment_id"])
                    .values(
                        user_id=payment["user_id"],
                        status=payment["status"],
                        updated_at=payment["updated_at"],
                    )
                )
            if customers:
                connection.execute(
                    customer_upsert,
                    [
                        {"user_id": user, "customer_id": customer, "created_at": datetime.now(UTC)}
                        for user, customer in customers.items()
                    ],
                )
            if sequences:
                connection.execute(
                    sequence_upsert,
                    [{"stream_key": key, "last_sequence": seq} for key, seq in sequences.items()],
                )
    return time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bench.baselines")
    kinds = parser.add_subparsers(dest="kind", required=True)
    raw = kinds.add_parser("raw", help="the raw confluent-kafka transactional loop")
    raw.add_argument("--fanout", type=float, default=1.0)
    raw.add_argument("--expect", type=int, required=True)
    kinds.add_parser("passthrough", help="the quixstreams pass-through pipeline")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        if args.kind == "raw":
            run_raw_loop(settings, fanout=args.fanout, expect=args.expect)
        else:
            run_passthrough(settings)
    except KafkaException as error:
        print(f"baseline {args.kind} failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
