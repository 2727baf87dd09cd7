"""Outgoing Kafka records, produced by the pipeline inside its Kafka transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Destination = Literal["events", "results", "dlq"]
Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    destination: Destination
    key: bytes | None
    value: bytes | None
    headers: Headers


@dataclass(frozen=True, slots=True)
class IncomingMessage:
    """One consumed command message and where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
