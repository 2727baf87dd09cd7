"""The canonical hash never changes: it is compared with digests stored in the inbox.

``canonical_sha256`` writes the canonical text itself, for speed; these tests hold it to
the definition every stored digest was made with, on generated commands of every type,
and pin two digests so that a change of the definition itself (a pydantic upgrade that
writes datetimes differently...) fails too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings

from schemas.canonical import canonical_sha256, canonical_text, reference_canonical_text
from schemas.commands import Command
from schemas.decoding import decode_command
from tests.factories import add_payment_method, command
from tests.unit.wire_documents import command_documents, validated


def _digest_as_stored(command: Command) -> bytes:
    """How every stored digest was computed (schemas/canonical.py up to the fast writer)."""
    canonical = json.dumps(command.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_documents())
def test_the_digest_of_any_command_is_the_stored_one(document: dict[str, Any]) -> None:
    command = validated(document)
    assert canonical_text(command) == reference_canonical_text(command)
    assert canonical_sha256(command) == _digest_as_stored(command)


def test_digests_are_pinned() -> None:
    document = add_payment_method(
        command_id="7c1e4f3a-8b2d-4c6e-9f0a-1b2c3d4e5f60",
        billing_name='Zoë "Ada" O\'Brien \\ 😀',
        payment_method_id="pm:1@x",
    )
    document["payload"]["customer"] = {"name": "Ana Lucía", "email": "ana@example.com"}
    document["issuedAt"] = "2026-11-30T10:00:00.5+01:30"
    assert (
        canonical_sha256(validated(document)).hex()
        == "306318d4f4b68f57e137c35433d317dd2ec96bf4244fa4ea1adb0659fe36b59f"
    )
    link = command(
        "LinkGuestPayments",
        "user-9",
        {"paymentIds": ["pay-2", "pay-1"]},
        command_id="7C1E4F3A-8B2D-4C6E-9F0A-1B2C3D4E5F61",
    )
    assert (
        canonical_sha256(validated(link)).hex()
        == "398ef8637ed6df9e633789b273c0aa03632dd4c33bc899dba2981e76aa2bc1ae"
    )


def test_key_order_spacing_and_spelling_do_not_count() -> None:
    document = add_payment_method(command_id="7c1e4f3a-8b2d-4c6e-9f0a-1b2c3d4e5f60")
    reordered = dict(reversed(list(document.items())))
    reordered["commandId"] = document["commandId"].upper()
    reordered["issuedAt"] = "2026-11-30T10:00:00Z"
    compact = json.dumps(document, separators=(",", ":")).encode()
    spaced = json.dumps(reordered, indent=4).encode()
    assert canonical_sha256(decode_command(compact, b"user-123")) == canonical_sha256(
        decode_command(spaced, b"user-123")
    )


class _Text(str):
    """A str subclass: not a type the fast writer assumes it can write."""


def test_a_value_of_an_unexpected_type_takes_the_reference_path() -> None:
    built = validated(add_payment_method(billing_name="Ada"))
    odd = built.model_copy(update={"correlation_id": _Text("order-42")})
    assert canonical_text(odd) == reference_canonical_text(odd)
    assert canonical_sha256(odd) == _digest_as_stored(odd)
