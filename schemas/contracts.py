"""Generated contracts: JSON Schemas of every message and an AsyncAPI 3 document.

The pydantic models are the source of truth; ``payment-worker schemas generate`` writes
these files under ``schemas/``, and a test fails when the committed files are stale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from schemas.commands import COMMAND_TYPES
from schemas.events import EventEnvelope
from schemas.results import CommandResult

SCHEMAS_DIR = Path(__file__).resolve().parent
GENERATED_DIR = SCHEMAS_DIR / "json"
ASYNCAPI_FILE = SCHEMAS_DIR / "asyncapi.json"


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return TypeAdapter(model).json_schema(by_alias=True, mode="serialization")


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name (relative to ``schemas/json``) to JSON Schema, for every message."""
    schemas = {
        f"commands/{name}.schema.json": TypeAdapter(model).json_schema(
            by_alias=True, mode="validation"
        )
        for name, model in sorted(COMMAND_TYPES.items())
    }
    schemas["events/EventEnvelope.schema.json"] = _schema(EventEnvelope)
    schemas["results/CommandResult.schema.json"] = _schema(CommandResult)
    return schemas


def asyncapi_document() -> dict[str, Any]:
    """The worker's four topics (commands, events, results, dead letters) as an AsyncAPI 3
    document; the projection's dead-letter topic is the User Service side's own."""
    commands = {name: {"$ref": f"./json/commands/{name}.schema.json"} for name in COMMAND_TYPES}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "payment-worker",
            "version": "1",
            "description": "Payment commands in, payment events and command results out. "
            "UTF-8 JSON, camelCase, at most 64 KiB per message.",
        },
        "channels": {
            "paymentCommands": {
                "address": "payment.commands",
                "description": "Keyed by userId; for a guest command, by its paymentId.",
                "messages": {
                    name: {"name": name, "contentType": "application/json", "payload": ref}
                    for name, ref in commands.items()
                },
            },
            "paymentEvents": {
                "address": "payment.events",
                "description": "Same key as the command. Headers eventId, type, schemaVersion.",
                "messages": {
                    "event": {
                        "name": "EventEnvelope",
                        "contentType": "application/json",
                        "payload": {"$ref": "./json/events/EventEnvelope.schema.json"},
                    }
                },
            },
            "commandResults": {
                "address": "payment.command-results",
                "description": "Exactly one result per command, same key as the command.",
                "messages": {
                    "result": {
                        "name": "CommandResult",
                        "contentType": "application/json",
                        "payload": {"$ref": "./json/results/CommandResult.schema.json"},
                    }
                },
            },
            "deadLetters": {
                "address": "payment.commands.dlq",
                "description": "The original key, bytes and headers, plus dlq.* headers "
                "(reason, source topic/partition/offset, group, error, payload SHA-256, "
                "worker version). Bodies with card data are withheld.",
                "messages": {"deadLetter": {"name": "DeadLetter"}},
            },
        },
        "operations": {
            "consumeCommands": {
                "action": "receive",
                "channel": {"$ref": "#/channels/paymentCommands"},
            },
            "publishEvents": {"action": "send", "channel": {"$ref": "#/channels/paymentEvents"}},
            "publishResults": {
                "action": "send",
                "channel": {"$ref": "#/channels/commandResults"},
            },
            "publishDeadLetters": {
                "action": "send",
                "channel": {"$ref": "#/channels/deadLetters"},
            },
        },
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def expected_files() -> dict[Path, str]:
    files = {GENERATED_DIR / name: render(schema) for name, schema in json_schemas().items()}
    files[ASYNCAPI_FILE] = render(asyncapi_document())
    return files


def write_contracts() -> list[Path]:
    """Write every generated file; returns the paths that changed."""
    changed = []
    for path, content in expected_files().items():
        if not path.exists() or path.read_text() != content:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            changed.append(path)
    return changed
