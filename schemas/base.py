"""Shared configuration of every wire model: camelCase on the wire, snake_case in code."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel

SCHEMA_VERSION: Final = 1

# Identifiers chosen by other services: printable, no whitespace, bounded.
Identifier = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$"),
]


class WireModel(BaseModel):
    """Frozen, camelCase, and strict about unknown fields so typos never pass silently."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        ser_json_timedelta="iso8601",
    )

    def to_wire(self) -> bytes:
        """The UTF-8 JSON bytes of this model, camelCase; absent values are explicit nulls."""
        return self.model_dump_json(by_alias=True).encode()
