"""The baselines the worker is compared with, on the same broker and database.

- raw: a plain confluent-kafka consume → produce loop, transactional, one transaction per
  consumed batch with the offsets in it; per command it publishes one record to the
  results topic and, on average, as many to the events topic as the worker does.
- passthrough: a quixstreams pipeline ``dataframe(topic).apply(...).to_topic(...)``,
  exactly-once, with the worker's commit interval; one output per input.
- database: the rows the worker writes (inbox, payment methods, payments, gateway
  customers, event streams) for the same commands, written in large bulk transactions
  (5,000 commands each by default, multi-row statements), without Kafka: what PostgreSQL
  on this machine takes of these rows at most, whatever the worker's own batch size.

The two Kafka baselines run as child processes (``python -m bench.baselines raw|passthrough``,
settings from the ``PAYMENT_WORKER_*`` environment), like the worker itself.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer
from psycopg import sql
from quixstreams import Application
from quixstreams.kafka.configuration import ConnectionConfig
from sqlalchemy import Engine, Table
from sqlalchemy.engine import Dialect

from bench.expected import CommandRows
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
from tests.support.harness import REPOSITORY, exit_with_parent, settings_environment

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
                exit_with_parent([sys.executable, "-m", "bench.baselines", name, *args]),
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


def run_raw_loop(
    settings: Settings, *, fanout: float, expect: int, cpu_report: Path | None = None
) -> None:
    """Consume a batch, publish its outputs and offsets in one transaction, repeat.

    ``cpu_report`` receives the process's CPU seconds from the first message consumed to
    the last commit: a run of a few hundred messages is one or two transactions, done
    before the benchmark sees its first output, so a window between visible outputs would
    miss the work.
    """
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
    cpu_started: float | None = None
    try:
        while done < expect:
            messages = consumer.consume(
                num_messages=batch_size, timeout=settings.commit_interval_seconds
            )
            messages = [m for m in messages if m.error() is None]
            if not messages:
                continue
            if cpu_started is None:
                cpu_started = time.process_time()  # every thread of the process
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
        if cpu_report is not None and cpu_started is not None:
            cpu = {"cpuSeconds": time.process_time() - cpu_started, "messages": done}
            cpu_report.write_text(json.dumps(cpu))
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


# --- C: PostgreSQL bulk writes ---------------------------------------------------------------


def _names(table: Table) -> list[str]:
    return [column.name for column in table.columns]


def _type_names(table: Table, dialect: Dialect) -> list[str]:
    """PostgreSQL type names of ``table``'s columns, as psycopg's binary COPY wants them."""
    return [str(column.type.compile(dialect=dialect)).lower() for column in table.columns]


def _copy_statement(table: Table) -> sql.Composed:
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, _names(table)))
    )


def _upsert_from_arrays(
    table: Table,
    key: str,
    dialect: Dialect,
    *,
    keep: Sequence[str] = (),
    order_by: Sequence[str] = (),
) -> sql.Composed:
    """``INSERT INTO table SELECT * FROM unnest(one array per column) ON CONFLICT (key) DO
    UPDATE`` every column but ``key`` and ``keep``: one statement for any number of rows."""
    names, types = _names(table), _type_names(table, dialect)
    columns = sql.SQL(", ").join(map(sql.Identifier, names))
    statement = sql.SQL(
        "INSERT INTO {table} ({columns}) SELECT * FROM unnest({arrays}) AS v({columns})"
    ).format(
        table=sql.Identifier(table.name),
        columns=columns,
        arrays=sql.SQL(", ").join(sql.SQL("%s::" + kind + "[]") for kind in types),
    )
    if order_by:
        statement += sql.SQL(" ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, order_by))
        )
    updated = [name for name in names if name != key and name not in keep]
    return statement + sql.SQL(" ON CONFLICT ({key}) DO UPDATE SET {changes}").format(
        key=sql.Identifier(key),
        changes=sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in updated
        ),
    )


def _arrays(table: Table, rows: Sequence[dict[str, object]]) -> list[list[object]]:
    return [[row[name] for row in rows] for name in _names(table)]


_PAYMENT_LINK = sql.SQL(
    "UPDATE payments AS p SET user_id = v.user_id, status = v.status, updated_at = v.updated_at"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
    " AS v(payment_id, user_id, status, updated_at) WHERE p.payment_id = v.payment_id"
)


@dataclass
class _Batch:
    """What one transaction writes: the last state of each row its commands touch."""

    inbox: list[dict[str, object]] = field(default_factory=list)
    methods: dict[str, dict[str, object]] = field(default_factory=dict)
    new_payments: dict[str, dict[str, object]] = field(default_factory=dict)
    changed_payments: dict[str, dict[str, object]] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    customers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, commands: Sequence[CommandRows]) -> _Batch:
        batch = cls(inbox=[command.inbox for command in commands])
        for command in commands:
            batch.methods.update({str(m["payment_method_id"]): m for m in command.methods})
            for payment in command.new_payments:
                batch.new_payments[str(payment["payment_id"])] = payment
            for payment in command.changed_payments:
                new = payment["payment_id"] in batch.new_payments
                target = batch.new_payments if new else batch.changed_payments
                target[str(payment["payment_id"])] = payment
            if command.last_sequence is not None:
                batch.sequences[command.key] = command.last_sequence
            user_id = stream_user_id(command.key)
            if command.customer_id is not None and user_id is not None:
                batch.customers[user_id] = command.customer_id
        return batch


def write_batches(engine: Engine, rows: Sequence[CommandRows], batch_size: int) -> float:
    """Write ``rows`` in transactions of ``batch_size`` commands; returns the seconds taken.

    The cheapest way PostgreSQL takes these rows, so that this is the database's limit
    rather than a client's: the inbox rows and new payments by binary ``COPY``; the
    payment methods (last change per method wins, rows giving up a default first, as the
    unique indexes require), the gateway customers and the last event sequence per key
    by one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE`` each; the linked
    payments by one ``UPDATE ... FROM unnest(...)``; every parameter sent in binary. The
    same rows, in the same tables and indexes, as the worker's checkpoints write.
    """
    inbox_copy, payments_copy = _copy_statement(processed_commands), _copy_statement(payments)
    dialect = engine.dialect
    inbox_types = _type_names(processed_commands, dialect)
    payment_types = _type_names(payments, dialect)
    method_upsert = _upsert_from_arrays(
        payment_methods,
        "payment_method_id",
        dialect,
        keep=("user_id", "created_at"),
        order_by=("is_default", "active"),
    )
    sequence_upsert = _upsert_from_arrays(stream_sequences, "stream_key", dialect)
    customer_upsert = _upsert_from_arrays(
        gateway_customers, "user_id", dialect, keep=("created_at",)
    )
    started = time.perf_counter()
    for start in range(0, len(rows), batch_size):
        batch = _Batch.of(rows[start : start + batch_size])
        with engine.begin() as connection:
            driver = connection.connection.driver_connection
            if not isinstance(driver, psycopg.Connection):
                raise TypeError("the database baseline needs the psycopg driver")
            with driver.cursor() as cursor:
                with cursor.copy(inbox_copy) as copy:
                    copy.set_types(inbox_types)
                    for row in batch.inbox:
                        copy.write_row([row[name] for name in _names(processed_commands)])
                if batch.new_payments:
                    with cursor.copy(payments_copy) as copy:
                        copy.set_types(payment_types)
                        for row in batch.new_payments.values():
                            copy.write_row([row[name] for name in _names(payments)])
                if batch.methods:
                    methods = list(batch.methods.values())
                    cursor.execute(method_upsert, _arrays(payment_methods, methods), binary=True)
                if batch.changed_payments:
                    linked = list(batch.changed_payments.values())
                    cursor.execute(
                        _PAYMENT_LINK,
                        [[p[name] for p in linked] for name in _LINK_COLUMNS],
                        binary=True,
                    )
                if batch.customers:
                    now = datetime.now(UTC)
                    cursor.execute(
                        customer_upsert,
                        [
                            list(batch.customers),
                            list(batch.customers.values()),
                            [now] * len(batch.customers),
                        ],
                        binary=True,
                    )
                if batch.sequences:
                    cursor.execute(
                        sequence_upsert,
                        [list(batch.sequences), list(batch.sequences.values())],
                        binary=True,
                    )
    return time.perf_counter() - started


_LINK_COLUMNS = ("payment_id", "user_id", "status", "updated_at")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bench.baselines")
    kinds = parser.add_subparsers(dest="kind", required=True)
    raw = kinds.add_parser("raw", help="the raw confluent-kafka transactional loop")
    raw.add_argument("--fanout", type=float, default=1.0)
    raw.add_argument("--expect", type=int, required=True)
    raw.add_argument("--cpu-report", type=Path, help="where to write the loop's CPU seconds")
    kinds.add_parser("passthrough", help="the quixstreams pass-through pipeline")
    args = parser.parse_args(argv)
    settings = load_settings()
    try:
        if args.kind == "raw":
            run_raw_loop(
                settings, fanout=args.fanout, expect=args.expect, cpu_report=args.cpu_report
            )
            # Stay until stopped, idle: the benchmark reads this process's CPU time when it
            # sees the last outputs, which may be after the last commit returned here.
            stops = {signal.SIGTERM, signal.SIGINT}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            signal.sigwait(stops)
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
