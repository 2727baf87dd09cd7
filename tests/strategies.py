"""Hypothesis strategies of command sequences, shared by property tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st
from pydantic import TypeAdapter

from schemas.commands import Command
from tests.factories import add_payment_method, command

COMMANDS: TypeAdapter[Command] = TypeAdapter(Command)
USERS = ["user-a", "user-b"]
METHOD_IDS = [f"pm-{n}" for n in range(6)]
START = datetime(2026, 11, 30, tzinfo=UTC)

COMMAND_SPECS = st.one_of(
    st.tuples(
        st.just("AddPaymentMethod"),
        st.sampled_from(USERS),
        st.sampled_from(METHOD_IDS),
        st.integers(0, 3),  # fingerprint number: repeats exercise de-duplication
        st.integers(2026, 2029),
        st.booleans(),
    ),
    st.tuples(
        st.just("UpdatePaymentMethod"),
        st.sampled_from(USERS),
        st.sampled_from(METHOD_IDS),
        st.integers(1, 12),
        st.integers(2027, 2030),
    ),
    st.tuples(st.just("RemovePaymentMethod"), st.sampled_from(USERS), st.sampled_from(METHOD_IDS)),
    st.tuples(
        st.just("SetDefaultPaymentMethod"), st.sampled_from(USERS), st.sampled_from(METHOD_IDS)
    ),
    st.tuples(st.just("EraseUserData"), st.sampled_from(USERS)),
)


def build_command(spec: tuple[Any, ...], issued_at: datetime) -> Command:
    kind, user = spec[0], spec[1]
    if kind == "AddPaymentMethod":
        _, _, method_id, fingerprint, exp_year, make_default = spec
        document = add_payment_method(
            user,
            payment_method_id=f"{user}-{method_id}",
            fingerprint=f"fp_{user}_{fingerprint}",
            exp_year=exp_year,
            make_default=make_default,
            issued_at=issued_at,
        )
    elif kind == "UpdatePaymentMethod":
        _, _, method_id, month, year = spec
        payload = {"paymentMethodId": f"{user}-{method_id}", "expMonth": month, "expYear": year}
        document = command(kind, user, payload, issued_at=issued_at)
    elif kind == "EraseUserData":
        document = command(kind, user, issued_at=issued_at)
    else:
        document = command(
            kind, user, {"paymentMethodId": f"{user}-{spec[2]}"}, issued_at=issued_at
        )
    return COMMANDS.validate_python(document)
