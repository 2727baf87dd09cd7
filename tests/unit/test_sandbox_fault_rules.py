"""Fault rules of the sandbox services (sandbox/faults.py): their JSON form and checks."""

from __future__ import annotations

import pytest

from sandbox.faults import FaultRule, Faults, InvalidFaultRule


def test_a_rule_reads_its_camel_case_json_and_lists_it_back() -> None:
    rule = FaultRule.from_json(
        {
            "path": "/v1/authorizations",
            "method": "post",
            "matchBody": "tok_x",
            "times": -1,
            "status": 503,
            "raw": "<html>",
            "headers": {"Retry-After": "1"},
            "delaySeconds": 0.5,
            "effect": True,
        }
    )
    assert rule == FaultRule(
        status=503,
        path="/v1/authorizations",
        method="POST",
        match_body="tok_x",
        times=-1,
        raw="<html>",
        headers={"Retry-After": "1"},
        delay_seconds=0.5,
        effect=True,
    )
    assert FaultRule.from_json(rule.as_json()) == rule
    answer = rule.answer()
    assert (answer.status, answer.body, answer.delay) == (503, b"<html>", 0.5)
    assert answer.headers == {"Retry-After": "1"}


def test_defaults_match_anything_once_with_a_scripted_500() -> None:
    rule = FaultRule.from_json({})
    assert (rule.status, rule.times, rule.effect, rule.delay_seconds) == (500, 1, False, 0)
    assert rule.answer().body == {"error": "scripted"}
    assert rule.matches("GET", "/anything", b"")


@pytest.mark.parametrize(
    "arguments",
    [
        {"status": 100},
        {"status": 304},
        {"times": 0},
        {"times": -2},
        {"delay_seconds": float("nan")},
        {"headers": {"Connection": "close"}},
        {"headers": {"Bad Name": "x"}},
        {"headers": {"X-Note": "caf\u00e9\u2603"}},
    ],
)
def test_a_rule_that_cannot_be_served_is_refused(arguments: dict[str, object]) -> None:
    with pytest.raises(InvalidFaultRule):
        FaultRule(**arguments)  # type: ignore[arg-type]


def test_rules_answer_in_order_and_drop_out_when_used_up() -> None:
    faults = Faults()
    assert faults.take("POST", "/v1/x", b"{}") is None
    faults.add([FaultRule(status=502, match_body="a", times=2), FaultRule(status=503)])
    taken = [faults.take("POST", "/v1/x", body) for body in (b"a", b"b", b"a", b"a")]
    assert [rule.status if rule else None for rule in taken] == [502, 503, 502, None]
    assert faults.listing() == []
    assert faults.answered == 3
    faults.add([FaultRule(times=-1)])
    assert faults.clear() == 1
    with pytest.raises(TypeError):
        faults.add([{"status": 500}])  # type: ignore[list-item]
