"""The committed contracts match the models, and events only evolve compatibly."""

from __future__ import annotations

import copy
import json

from schemas.compatibility import breaking_changes
from schemas.contracts import GENERATED_DIR, SCHEMAS_DIR, expected_files, json_schemas

PUBLISHED_EVENTS = SCHEMAS_DIR / "published" / "EventEnvelope.v1.schema.json"


def test_committed_contracts_are_up_to_date() -> None:
    stale = [
        str(path.relative_to(SCHEMAS_DIR))
        for path, content in expected_files().items()
        if not path.exists() or path.read_text() != content
    ]
    assert stale == [], "run `payment-worker schemas generate` and commit the result"
    generated = {p for p in GENERATED_DIR.rglob("*.json")}
    assert generated == {p for p in expected_files() if p.is_relative_to(GENERATED_DIR)}


def test_event_schema_is_compatible_with_the_published_version() -> None:
    published = json.loads(PUBLISHED_EVENTS.read_text())
    current = json_schemas()["events/EventEnvelope.schema.json"]
    assert breaking_changes(published, current) == []


def _event_schema() -> dict[str, object]:
    return copy.deepcopy(json_schemas()["events/EventEnvelope.schema.json"])


def test_removing_an_event_field_is_breaking() -> None:
    old = _event_schema()
    new = _event_schema()
    del new["$defs"]["PaymentMethodAddedPayload"]["properties"]["last4"]  # type: ignore[index]
    assert breaking_changes(old, new) == ["$.payload<PaymentMethodAddedPayload>.last4: removed"]


def test_new_required_field_and_removed_event_type_are_breaking() -> None:
    old = _event_schema()
    new = _event_schema()
    new["required"].append("tenantId")  # type: ignore[attr-defined]
    new["properties"]["type"]["enum"].remove("PaymentMethodRemoved")  # type: ignore[index]
    problems = breaking_changes(old, new)
    assert "$: newly required: ['tenantId']" in problems
    assert "$.type: values removed: ['PaymentMethodRemoved']" in problems


def test_new_optional_field_and_new_event_type_are_compatible() -> None:
    old = _event_schema()
    new = _event_schema()
    new["properties"]["tenantId"] = {"type": "string"}  # type: ignore[index]
    new["properties"]["type"]["enum"].append("PaymentMethodVerified")  # type: ignore[index]
    assert breaking_changes(old, new) == []
