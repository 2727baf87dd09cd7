"""``payment-worker send``: one command to ``payment.commands``, by hand.

The command comes from a JSON file, or is built from the subcommand's arguments
(``SEND_BUILDERS``, one builder per command type, from the arguments ``pipelines.cli``
defines); the envelope's ``commandId``, ``schemaVersion`` and ``issuedAt`` are filled in
unless given. With ``--wait`` the command's result is awaited on ``payment.results`` and
printed: exit status 0 if accepted, 3 if not, 1 if none came.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import Settings
from pipelines.kafka_clients import command_producer, read_records, topic_reader


def _add_payment_method_command(args: argparse.Namespace) -> dict[str, Any]:
    """``send add-payment-method``: the card's fields, and only the optional ones given."""
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
    """Leave out the arguments not given, so the payload holds only what was asked for."""
    return {key: value for key, value in values.items() if value is not None}


# One per ``send`` subcommand but ``file``: the command (without its envelope's id, version
# and time) built from that subcommand's arguments.
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


def send_command(settings: Settings, args: argparse.Namespace) -> int:
    """Produce the command, keyed by its user (or its guest payment); print its id, and
    with ``--wait`` its result. Exit status 0 if delivered (and accepted), 3 if the result
    is not ``accepted``, 1 if it could not be delivered or no result came in time."""

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
