"""The inbox: each processed command with the outcome exactly as it was published.

A redelivered command finds its row here and its stored outcome (events and result) is
published again, byte for byte, instead of being decided again (decision 0002). The
rows are inserted with the rest of their checkpoint's writes, and the inbox's primary
key takes a command id once: an id another writer stored first fails the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import RowMapping, select
from sqlalchemy.engine import Connection

from state.tables import processed_commands


@dataclass(frozen=True, slots=True)
class ProcessedCommand:
    """An inbox row: the outcome of a command exactly as it was published."""

    command_id: UUID
    payload_sha256: bytes
    stream_key: str
    source_topic: str
    source_partition: int
    source_offset: int
    command_type: str
    status: str
    result_value: bytes
    event_values: tuple[bytes, ...]
    processed_at: datetime


def processed_from_row(values: RowMapping) -> ProcessedCommand:
    return ProcessedCommand(
        command_id=values["command_id"],
        payload_sha256=bytes(values["payload_sha256"]),
        stream_key=values["stream_key"],
        source_topic=values["source_topic"],
        source_partition=values["source_partition"],
        source_offset=values["source_offset"],
        command_type=values["command_type"],
        status=values["status"],
        result_value=bytes(values["result_value"]),
        event_values=tuple(bytes(value) for value in values["event_values"]),
        processed_at=values["processed_at"],
    )


def read_stored_outcome(connection: Connection, command_id: UUID) -> ProcessedCommand | None:
    """The inbox row of ``command_id`` as PostgreSQL holds it now, if any."""
    row = (
        connection.execute(
            select(processed_commands).where(processed_commands.c.command_id == command_id)
        )
        .mappings()
        .one_or_none()
    )
    return None if row is None else processed_from_row(row)
