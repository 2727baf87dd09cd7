"""Shared configuration of every wire model: camelCase on the wire, snake_case in code."""

from __future__ import annotations

from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, StringConstraints, TypeAdapter
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
        """The UTF-8 JSON bytes of this model, camelCase; absent values are explicit nulls.

        The same bytes as ``model_dump_json(by_alias=True).encode()``, written by the
        model's own serializer straight to bytes (a ``TypeAdapter`` per class), and each
        nested model by its own class's serializer (``serialize_as_any``): an event's
        payload is then written without first finding which member of the union it is.
        ``tests/unit/test_wire_encoding.py`` compares the two on every event and result.
        """
        return _adapter(type(self)).dump_json(self, by_alias=True, serialize_as_any=True)


_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def _adapter(model_type: type[BaseModel]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(model_type)
    if adapter is None:
        adapter = _ADAPTERS[model_type] = TypeAdapter(model_type)
    return adapter
