"""``payment-worker``: the command line; each command is done by a module of its own.

This module only defines the arguments and hands the parsed ones, with the settings, to
the command's handler (``handler(settings, args) -> exit status``):

- ``run [worker|projection]``: ``pipelines.runners``
- ``view``: ``pipelines.view_printer``
- ``db upgrade|current``, ``topics create``, ``schemas generate``: ``pipelines.setup_commands``
- ``sandbox gateway|user-service``: ``pipelines.sandbox_commands``
- ``send``: ``pipelines.send_commands``
- ``events|results|dlq tail``: ``pipelines.topic_tail``
- ``dlq list|replay``: ``pipelines.dead_letter_commands``
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from config.logging import configure_logging
from config.settings import load_settings
from pipelines.dead_letter_commands import dlq_list, dlq_replay
from pipelines.runners import run_pipeline
from pipelines.sandbox_commands import serve_sandbox
from pipelines.send_commands import send_command
from pipelines.setup_commands import db_current, db_upgrade, schemas_generate, topics_create
from pipelines.topic_tail import tail_topic
from pipelines.view_printer import print_view


def _add_send_commands(kinds: Any) -> None:
    """The ``send`` subcommands after ``add-payment-method``; each one's arguments are what
    its builder in ``pipelines.send_commands.SEND_BUILDERS`` reads."""
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


def _parser() -> argparse.ArgumentParser:
    """Every command and its arguments; each sets ``handler`` to the function that does it."""
    parser = argparse.ArgumentParser(
        prog="payment-worker",
        description="Headless Kafka worker of the Payment Service. "
        "Settings come from PAYMENT_WORKER_* environment variables (see README).",
    )
    commands = parser.add_subparsers(dest="group", required=True)

    run = commands.add_parser("run", help="run a pipeline in the foreground (Ctrl-C stops it)")
    run.add_argument("pipeline", nargs="?", choices=["worker", "projection"], default="worker")
    run.set_defaults(handler=run_pipeline)

    view = commands.add_parser("view", help="print a user's payment method view (projection)")
    view.add_argument("user_id", metavar="USER_ID")
    view.set_defaults(handler=print_view)

    db = commands.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    db.add_parser("upgrade", help="apply every migration").set_defaults(handler=db_upgrade)
    db.add_parser("current", help="print the applied revision").set_defaults(handler=db_current)

    topics = commands.add_parser("topics", help="Kafka topics").add_subparsers(
        dest="topics", required=True
    )
    topics.add_parser("create", help="create the five topics (idempotent)").set_defaults(
        handler=topics_create
    )

    schemas = commands.add_parser("schemas", help="message contracts").add_subparsers(
        dest="schemas", required=True
    )
    schemas.add_parser(
        "generate", help="write JSON Schemas and the AsyncAPI document under schemas/"
    ).set_defaults(handler=schemas_generate)

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
        served.set_defaults(handler=serve_sandbox)

    send = commands.add_parser("send", help="produce a command to payment.commands")
    send.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="wait up to SECONDS for the command's result and print it",
    )
    send.set_defaults(handler=send_command)
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
        tail.set_defaults(handler=tail_topic, topic_kind=name)
        if name == "dlq":
            _add_dead_letter_commands(tail_group)
    return parser


def _add_dead_letter_commands(group: Any) -> None:
    """``dlq list`` and ``dlq replay``, beside ``dlq tail``: the selection arguments."""
    for action, handler, text in (
        ("list", dlq_list, "summarise dead letters: where from and why (never the body)"),
        ("replay", dlq_replay, "produce dead letters back to the command topic"),
    ):
        parser = group.add_parser(action, help=text)
        parser.add_argument("--reason", help="only this reason code, e.g. schema_violation")
        parser.add_argument("--partition", type=int, help="only this DLQ partition")
        parser.add_argument("--from-offset", type=int, help="first DLQ offset (inclusive)")
        parser.add_argument("--to-offset", type=int, help="last DLQ offset (inclusive)")
        parser.set_defaults(handler=handler)
        if action == "replay":
            parser.add_argument("--dry-run", action="store_true", help="only count")


def main(argv: list[str] | None = None) -> int:
    """The ``payment-worker`` entry point: parse, load the settings, log, run the command."""
    args = _parser().parse_args(argv)
    settings = load_settings()
    configure_logging(settings)
    return int(args.handler(settings, args))


if __name__ == "__main__":
    sys.exit(main())
