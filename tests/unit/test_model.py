"""State values change only through ``with_changes``, which must be ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.model import Payment, PaymentMethod

NOW = datetime(2026, 11, 30, tzinfo=UTC)
METHOD = PaymentMethod(
    "pm-1", "user-1", "tok_1", "visa", "4242", 12, 2030, "fp_1", "Ada", True, True, NOW, NOW
)
PAYMENT = Payment("pay-1", None, "order-1", 100, "EUR", None, "initiated", NOW, NOW)


@given(st.data())
def test_with_changes_is_dataclasses_replace(data: st.DataObject) -> None:
    for value in (METHOD, PAYMENT):
        names = [f.name for f in dataclasses.fields(value)]
        chosen = data.draw(st.lists(st.sampled_from(names), unique=True))
        changes: dict[str, Any] = {name: data.draw(st.integers()) for name in chosen}
        assert value.with_changes(**changes) == dataclasses.replace(value, **changes)


def test_an_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError):
        METHOD.with_changes(colour="blue")
