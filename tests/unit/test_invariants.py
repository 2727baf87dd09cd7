"""Properties that hold for any sequence of commands (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.decisions import decide
from domain.model import KeyState, apply_decision
from schemas.events import EventEnvelope
from tests.strategies import COMMAND_SPECS, START, USERS, build_command


def _view_from_events(events: list[EventEnvelope]) -> dict[str, tuple[int, int, bool]]:
    """What a consumer of the events alone knows: active methods, expiry, default."""
    view: dict[str, tuple[int, int, bool]] = {}
    default: str | None = None
    for event in events:
        payload = event.payload.model_dump()
        if event.type == "PaymentMethodAdded":
            view[payload["payment_method_id"]] = (payload["exp_month"], payload["exp_year"], False)
        elif event.type == "PaymentMethodUpdated" and payload["exp_month"] is not None:
            _, _, is_default = view[payload["payment_method_id"]]
            view[payload["payment_method_id"]] = (
                payload["exp_month"],
                payload["exp_year"],
                is_default,
            )
        elif event.type == "PaymentMethodRemoved":
            del view[payload["payment_method_id"]]
        elif event.type == "DefaultPaymentMethodChanged":
            default = payload["new_payment_method_id"]
    return {pid: (month, year, pid == default) for pid, (month, year, _) in view.items()}


@settings(max_examples=300, deadline=None)
@given(st.lists(COMMAND_SPECS, min_size=1, max_size=40))
def test_invariants_hold_for_any_command_sequence(specs: list[tuple[Any, ...]]) -> None:
    states = {user: KeyState(user) for user in USERS}
    events: dict[str, list[EventEnvelope]] = defaultdict(list)
    for index, spec in enumerate(specs):
        now = START + timedelta(seconds=index)
        cmd = build_command(spec, now)
        key = spec[1]
        decision = decide(cmd, states[key], now)
        assert decide(cmd, states[key], now) == decision, "decisions are deterministic"
        if decision.result.status != "accepted":
            assert decision.events == ()
            assert decision.changed_methods == ()
        states[key] = apply_decision(states[key], decision)
        events[key].extend(decision.events)

        state = states[key]
        defaults = [m for m in state.active_methods if m.is_default]
        # Exactly one default while any method is active, none otherwise.
        assert len(defaults) == (1 if state.active_methods else 0)
        assert all(m.active for m in state.methods if m.is_default)
        assert all(m.gateway_token is None for m in state.methods if not m.active)
        assert len(state.active_methods) <= 20
        fingerprints = [m.fingerprint for m in state.active_methods]
        assert len(fingerprints) == len(set(fingerprints))

    for user in USERS:
        sequences = [event.sequence for event in events[user]]
        assert sequences == list(range(1, len(sequences) + 1)), "gap-free per key"
        assert states[user].last_sequence == len(sequences)
        stored = {
            m.payment_method_id: (m.exp_month, m.exp_year, m.is_default)
            for m in states[user].active_methods
        }
        assert _view_from_events(events[user]) == stored, "events rebuild the stored state"
        assert len({e.event_id for e in events[user]}) == len(events[user])
