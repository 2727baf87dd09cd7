"""``payment-worker``: run the worker, migrate the database, create topics, send commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from confluent_kafka import KafkaException
from quixstreams.checkpointing.exceptions import CheckpointProducerTimeout
from quixstreams.internal_producer import KafkaProducerTransactionCommitFailed
from quixstreams.kafka.exceptions import BaseKafkaException
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from config.logging import configure_logging
from config.settings import Settings, load_settings
from domain.errors import TransientError
from pipelines.dead_letter_tools import DeadLetterFilter, describe, read_dead_letters, replay
from pipelines.health import Health, serve_ops
from pipelines.kafka_clients import command_producer, read_records, topic_reader
from pipelines.kafka_statistics import statistics_callback
from pipelines.projection import build_projection
from pipelines.shutdown import GracefulShutdown, Stoppable
from pipelines.topics import create_topics
from pipelines.version import build_commit, worker_version
from pipelines.wiring import build_dependencies, build_worker
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer
from schemas.contracts import write_contracts
from state.database import (
    create_database_engine,
    current_revision,
    database_reachable,
    head_revision,
    schema_is_current,
    upgrade_schema,
)
from state.projection_store import (
    ProjectionStore,
    create_projection_engine,
    ensure_projection_schema,
    read_view,
)
from telemetry import metrics

logger = logging.getLogger("payment_worker")

RESTART_DELAY_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 30.0
# A pipeline that ran this long before failing starts its back-off from the beginning.
RESTART_RESET_AFTER_SECONDS = 60.0
# How long start-up waits for PostgreSQL to answer before giving up.
DATABASE_WAIT_SECONDS = 120.0
# Failures the pipeline recovers from by starting again from its last commit: an
# unavailable dependency, and Kafka errors that leave the client unusable (a broker
# restart timing out a transaction, a producer fenced after a long pause). A new
# application gets new clients; exactly-once holds because nothing uncommitted counts.
RESTARTABLE_FAILURES: tuple[type[Exception], ...] = (
    TransientError,
    KafkaException,
    BaseKafkaException,
    KafkaProducerTransactionCommitFailed,
    CheckpointProducerTimeout,
)

T = TypeVar("T")


def _run_worker(settings: Settings, args: argparse.Namespace) -> int:
    # First, before any thread starts: every thread then leaves the signals to it.
    shutdown = GracefulShutdown(settings.shutdown_timeout_seconds)
    shutdown.install()
    if args.pipeline == "projection":
        return _run_projection(settings, shutdown)
    engine = create_database_engine(settings)
    revision = _once_database_answers(lambda: current_revision(engine, settings.database_schema))
    head = head_revision()
    if not schema_is_current(revision):
        logger.error(
            "the database schema needs migrating: run `payment-worker db upgrade`",
            extra={"revision": revision, "required": head},
        )
        return 2
    # The same engine answers the readiness probe's database check.
    health = _serve_operations(settings, engine)
    logger.info(
        "payment worker starting",
        extra={
            "version": worker_version(),
            "kafka": settings.kafka_bootstrap_servers,
            "database": settings.database_url_for_display(),
            "schema": settings.database_schema,
            "group": settings.consumer_group,
            "commands": settings.topic_commands,
            "metricsPort": settings.metrics_port,
        },
    )
    _run_until_stopped(settings, health, shutdown)
    logger.info("payment worker stopped")
    return 0


def _once_database_answers(read: Callable[[], T]) -> T:
    """Run a start-up read, retrying while PostgreSQL is starting or briefly away.

    Workers often start together with their database (a deploy, a node restart); a
    wrong address still fails, after ``DATABASE_WAIT_SECONDS``.
    """
    deadline = time.monotonic() + DATABASE_WAIT_SECONDS
    delay = RESTART_DELAY_SECONDS
    while True:
        try:
            return read()
        except OperationalError as error:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning(
                "PostgreSQL is not reachable yet; retrying",
                extra={"error": type(error.orig).__name__, "retryInSeconds": delay},
            )
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _serve_operations(settings: Settings, engine: Engine) -> Health:
    """Build info, and /metrics, /healthz and /readyz on the metrics port."""
    metrics.BUILD_INFO.info({"version": worker_version(), "commit": build_commit()})
    health = Health(lambda: database_reachable(engine))
    if settings.metrics_port:
        serve_ops(settings.metrics_host, settings.metrics_port, health)
    return health


def _run_until_stopped(settings: Settings, health: Health, shutdown: GracefulShutdown) -> None:
    """Run the pipeline; when a dependency fails, wait and start it again.

    A failed batch is never half-applied: its Postgres transaction and its Kafka
    transaction both roll back, and the new pipeline resumes from the last commit. So a
    database or gateway outage delays commands; it never drops, reorders or
    dead-letters them.
    """
    dependencies = build_dependencies(settings)
    on_statistics = statistics_callback(health.kafka)
    _run_restarting(lambda: build_worker(settings, dependencies, on_statistics), health, shutdown)


class Pipeline(Stoppable, Protocol):
    def run(self) -> object: ...


def _run_restarting(
    build: Callable[[], Pipeline], health: Health, shutdown: GracefulShutdown
) -> None:
    delay = RESTART_DELAY_SECONDS
    while not shutdown.requested:
        started = time.monotonic()
        try:
            health.pipeline("running")
            app = build()
            shutdown.attach(app)
            app.run()
            health.pipeline("stopping")
            return
        except RESTARTABLE_FAILURES as error:
            health.pipeline("backing_off")
            if time.monotonic() - started > RESTART_RESET_AFTER_SECONDS:
                delay = RESTART_DELAY_SECONDS
            metrics.PIPELINE_RESTARTS.inc()
            logger.warning(
                "a dependency is unavailable; the pipeline restarts from its last commit",
                extra={
                    "error": str(error),
                    "errorType": type(error).__name__,
                    "retryInSeconds": round(delay, 1),
                },
            )
            if shutdown.wait(delay * random.uniform(0.8, 1.2)):  # noqa: S311 - jitter
                health.pipeline("stopping")
                return
            delay = min(delay * 2, RESTART_DELAY_MAX_SECONDS)


def _run_projection(settings: Settings, shutdown: GracefulShutdown) -> int:
    """The User Service side: ``payment.events`` into the per-user view."""
    engine = create_projection_engine(settings)
    _once_database_answers(lambda: ensure_projection_schema(engine, settings.projection_schema))
    health = _serve_operations(settings, engine)
    logger.info(
        "payment view projection starting",
        extra={
            "version": worker_version(),
            "kafka": settings.kafka_bootstrap_servers,
            "database": settings.database_url_for_display(),
            "schema": settings.projection_schema,
            "group": settings.projection_consumer_group,
            "events": settings.topic_events,
            "dlq": settings.projection_dlq_topic(),
            "metricsPort": settings.metrics_port,
        },
    )
    # Same restart-on-TransientError loop as the worker; the store is rebuilt with the
    # app, so a failed checkpoint leaves nothing staged behind.
    on_statistics = statistics_callback(health.kafka)
    _run_restarting(
        lambda: build_projection(settings, ProjectionStore(engine), on_statistics),
        health,
        shutdown,
    )
    logger.info("payment view projection stopped")
    return 0


def _view(settings: Settings, args: argparse.Namespace) -> int:
    engine = create_projection_engine(settings)
    try:
        view = read_view(engine, args.user_id)
    finally:
        engine.dispose()
    if view is None:
        print(json.dumps({"userId": args.user_id, "found": False}))
        return 1
    document = {
        "userId": view.user_id,
        "lastSequence": view.last_sequence,
        "held": view.gap is not None,
        "paymentMethods": [
            {
                "paymentMethodId": m.payment_method_id,
                "brand": m.brand,
                "last4": m.last4,
                "expMonth": m.exp_month,
                "expYear": m.exp_year,
                "isDefault": m.is_default,
                "updatedAt": m.updated_at.isoformat(),
            }
            for m in view.methods
        ],
    }
    if view.gap is not None:
        document["gap"] = {
            "expectedSequence": view.gap.expected_sequence,
            "foundSequence": view.gap.found_sequence,
        }
    print(json.dumps(document, indent=2))
    return 0


def _db_upgrade(settings: Settings, _: argparse.Namespace) -> int:

    engine = create_database_engine(settings)
    upgrade_schema(engine, settings.database_schema)
    print(
        f"database schema {settings.database_schema!r} at revision "
        f"{current_revision(engine, settings.database_schema)}"
    )
    return 0


def _db_current(settings: Settings, _: argparse.Namespace) -> int:

    revision = current_revision(create_database_engine(settings), settings.database_schema)
    print(revision or "not migrated")
    return 0 if revision else 1


def _topics_create(settings: Settings, _: argparse.Namespace) -> int:

    for name, outcome in create_topics(settings).items():
        print(f"{name}: {outcome}")
    return 0


def _add_payment_method_command(args: argparse.Namespace) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "gatewayToken": args.gateway_token,
        "card": {
            "brand": args.brand,
            "last4": args.last4,
            "expMonth": args.exp_month,
            "expYear": args.exp_year,
            "fingerprint": args.fingerprint,
        },
        "makeDefault": args.make_default,
    }
    if args.payment_method_id:
        payload["paymentMethodId"] = args.payment_method_id
    if args.billing_name:
        payload["billingName"] = args.billing_name
    return {"type": "AddPaymentMethod", "userId": args.user_id, "payload": payload}


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


SEND_BUILDERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "add-payment-method": _add_payment_method_command,
    "update-payment-method": lambda args: {
        "type": "UpdatePaymentMethod",
        "userId": args.user_id,
        "payload": _without_none(
            {
                "paymentMethodId": args.payment_method_id,
                "expMonth": args.exp_month,
                "expYear": args.exp_year,
                "billingName": args.billing_name,
                "source": args.source,
            }
        ),
    },
    "remove-payment-method": lambda args: {
        "type": "RemovePaymentMethod",
        "userId": args.user_id,
        "payload": {"paymentMethodId": args.payment_method_id, "reason": args.reason},
    },
    "set-default-payment-method": lambda args: {
        "type": "SetDefaultPaymentMethod",
        "userId": args.user_id,
        "payload": {"paymentMethodId": args.payment_method_id},
    },
    "erase-user-data": lambda args: {
        "type": "EraseUserData",
        "userId": args.user_id,
        "payload": {},
    },
    "initiate-payment": lambda args: {
        "type": "InitiatePayment",
        "userId": args.user_id,
        "payload": _without_none(
            {
                "paymentId": args.payment_id,
                "orderId": args.order_id,
                "amount": args.amount,
                "currency": args.currency,
                "paymentMethodId": args.payment_method_id,
                "gatewayToken": args.gateway_token,
            }
        ),
    },
    "link-guest-payments": lambda args: {
        "type": "LinkGuestPayments",
        "userId": args.user_id,
        "payload": {"paymentIds": args.payment_ids},
    },
}


def _add_send_commands(kinds: Any) -> None:
    update = kinds.add_parser("update-payment-method", help="change expiry or billing name")
    update.add_argument("--user-id", required=True)
    update.add_argument("--payment-method-id", required=True)
    update.add_argument("--exp-month", type=int)
    update.add_argument("--exp-year", type=int)
    update.add_argument("--billing-name")
    update.add_argument("--source", choices=["user", "account_updater"], default="user")
    remove = kinds.add_parser("remove-payment-method", help="remove a saved method")
    remove.add_argument("--user-id", required=True)
    remove.add_argument("--payment-method-id", required=True)
    remove.add_argument(
        "--reason",
        choices=["user_request", "card_closed", "fraud_suspected"],
        default="user_request",
    )
    default = kinds.add_parser("set-default-payment-method", help="make a method the default")
    default.add_argument("--user-id", required=True)
    default.add_argument("--payment-method-id", required=True)
    erase = kinds.add_parser("erase-user-data", help="erase a user's payment data")
    erase.add_argument("--user-id", required=True)
    pay = kinds.add_parser("initiate-payment", help="start a payment (omit --user-id: guest)")
    pay.add_argument("--user-id")
    pay.add_argument("--payment-id", required=True)
    pay.add_argument("--order-id", required=True)
    pay.add_argument("--amount", type=int, required=True, help="in minor units, e.g. cents")
    pay.add_argument("--currency", required=True)
    instrument = pay.add_mutually_exclusive_group(required=True)
    instrument.add_argument("--payment-method-id")
    instrument.add_argument("--gateway-token")
    link = kinds.add_parser("link-guest-payments", help="attach guest payments to a user")
    link.add_argument("--user-id", required=True)
    link.add_argument("payment_ids", nargs="+", metavar="PAYMENT_ID")


def _send(settings: Settings, args: argparse.Namespace) -> int:

    if args.command == "file":
        text = sys.stdin.read() if args.path == "-" else Path(args.path).read_text()
        command = json.loads(text)
    else:
        command = SEND_BUILDERS[args.command](args)
    command.setdefault("commandId", str(uuid.uuid4()))
    command.setdefault("schemaVersion", 1)
    command.setdefault("issuedAt", datetime.now(UTC).isoformat(timespec="seconds"))
    key = command.get("userId") or command.get("payload", {}).get("paymentId")

    results = (
        topic_reader(settings, settings.topic_results, from_beginning=False) if args.wait else None
    )
    producer = command_producer(settings)
    producer.produce(settings.topic_commands, key=key, value=json.dumps(command).encode())
    if producer.flush(10) != 0:
        print("the command could not be delivered to Kafka within 10 s", file=sys.stderr)
        return 1
    print(json.dumps({"sent": command["commandId"], "key": key}))
    if results is None:
        return 0
    for record in read_records(results, idle_timeout=args.wait, max_records=None):
        value = record["value"]
        if isinstance(value, dict) and value.get("commandId") == command["commandId"]:
            print(json.dumps(value))
            return 0 if value.get("status") == "accepted" else 3
    print(f"no result within {args.wait} s: is a worker running?", file=sys.stderr)
    return 1


def _tail(settings: Settings, args: argparse.Namespace) -> int:

    topic = {
        "events": settings.topic_events,
        "results": settings.topic_results,
        "dlq": settings.topic_dlq,
    }[args.topic_kind]
    consumer = topic_reader(settings, topic, from_beginning=args.from_beginning)
    try:
        for record in read_records(consumer, idle_timeout=args.timeout, max_records=args.max):
            print(json.dumps(record), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


def _schemas_generate(_: Settings, __: argparse.Namespace) -> int:
    for path in write_contracts():
        print(f"wrote {path}")
    return 0


def _serve_sandbox(_: Settings, args: argparse.Namespace) -> int:
    server: SandboxGatewayServer | UserServiceStubServer
    delay = args.answer_delay_seconds
    if args.sandbox == "gateway":
        server = SandboxGatewayServer(args.host, args.port, answer_delay_seconds=delay)
    else:
        server = UserServiceStubServer(args.host, args.port, answer_delay_seconds=delay)
    logger.info(f"sandbox {args.sandbox} listening", extra={"url": server.url})
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payment-worker",
        description="Headless Kafka worker of the Payment Service. "
        "Settings come from PAYMENT_WORKER_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="group", required=True)

    run = commands.add_parser("run", help="run a pipeline in the foreground (Ctrl-C stops it)")
    run.add_argument("pipeline", nargs="?", choices=["worker", "projection"], default="worker")
    run.set_defaults(handler=_run_worker)

    view = commands.add_parser("view", help="print a user's payment method view (projection)")
    view.add_argument("user_id", metavar="USER_ID")
    view.set_defaults(handler=_view)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply every migration").set_defaults(handler=_db_upgrade)
    db.add_parser("current", help="print the applied revision").set_defaults(handler=_db_current)

    topics = commands.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="topics", required=True
    )
    topics.add_parser("create", help="create the five topics (idempotent)").set_defaults(
        handler=_topics_create
    )

    schemas = commands.add_parser("schemas", help="message contracts").add_subparsers(
        dest="schemas", required=True
    )
    schemas.add_parser(
        "generate", help="write JSON Schemas and the AsyncAPI document under schemas/"
    ).set_defaults(handler=_schemas_generate)

    sandbox = commands.add_parser(
        "sandbox", help="stand-ins for outside services (local runs and tests)"
    ).add_subparsers(dest="sandbox", required=True)
    for name, port, text in (
        ("gateway", 8090, "serve the sandbox payment gateway over HTTP"),
        ("user-service", 8091, "serve a User Service stand-in (made-up profiles) over HTTP"),
    ):
        served = sandbox.add_parser(name, help=text)
        served.add_argument("--host", default="127.0.0.1")
        served.add_argument("--port", type=int, default=port)
        served.add_argument(
            "--answer-delay-seconds",
            type=float,
            default=0.0,
            help="answer every call this long after it arrives (a distant service)",
        )
        served.set_defaults(handler=_serve_sandbox)

    send = commands.add_parser("send", help="produce a command to payment.commands")
    send.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the command's result and print it",
    )
    send.set_defaults(handler=_send)
    send_kinds = send.add_subparsers(dest="command", required=True)
    from_file = send_kinds.add_parser(
        "file", help="a command envelope from a JSON file (- = stdin)"
    )
    from_file.add_argument("path")
    add = send_kinds.add_parser("add-payment-method", help="save a tokenized card for a user")
    add.add_argument("--user-id", required=True)
    add.add_argument("--gateway-token", required=True)
    add.add_argument("--brand", default="visa")
    add.add_argument("--last4", required=True)
    add.add_argument("--exp-month", type=int, required=True)
    add.add_argument("--exp-year", type=int, required=True)
    add.add_argument("--fingerprint", required=True)
    add.add_argument("--payment-method-id")
    add.add_argument("--billing-name")
    add.add_argument("--make-default", action="store_true")

    _add_send_commands(send_kinds)

    for name in ("events", "results", "dlq"):
        tail_group = commands.add_parser(name, help=f"read the {name} topic").add_subparsers(
            dest="action", required=True
        )
        tail = tail_group.add_parser("tail", help="print records as JSON lines (read_committed)")
        tail.add_argument("--from-beginning", action="store_true")
        tail.add_argument("--max", type=int, default=None, help="stop after this many records")
        tail.add_argument("--timeout", type=float, default=None, help="stop after idle seconds")
        tail.set_defaults(handler=_tail, topic_kind=name)
        if name == "dlq":
            _add_dead_letter_commands(tail_group)
    return parser


def _add_dead_letter_commands(group: Any) -> None:
    for action, handler, text in (
        ("list", _dlq_list, "summarise dead letters: where from and why (never the body)"),
        ("replay", _dlq_replay, "produce dead letters back to the command topic"),
    ):
        parser = group.add_parser(action, help=text)
        parser.add_argument("--reason", help="only this reason code, e.g. schema_violation")
        parser.add_argument("--partition", type=int, help="only this DLQ partition")
        parser.add_argument("--from-offset", type=int, help="first DLQ offset (inclusive)")
        parser.add_argument("--to-offset", type=int, help="last DLQ offset (inclusive)")
        parser.set_defaults(handler=handler)
        if action == "replay":
            parser.add_argument("--dry-run", action="store_true", help="only count")


def _dead_letter_filter(args: argparse.Namespace) -> DeadLetterFilter:
    return DeadLetterFilter(
        reason=args.reason,
        partition=args.partition,
        from_offset=args.from_offset,
        to_offset=args.to_offset,
    )


def _dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    for message in read_dead_letters(settings, _dead_letter_filter(args)):
        print(json.dumps(describe(message)), flush=True)
    return 0


def _dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    counts = replay(settings, _dead_letter_filter(args), dry_run=args.dry_run)
    print(json.dumps({**counts, "dryRun": args.dry_run}))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings)
    return int(args.handler(settings, args))


if __name__ == "__main__":
    sys.exit(main())
