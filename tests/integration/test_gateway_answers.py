"""Whatever the gateway and the User Service answer, the gateway's records and Postgres agree.

A real worker process against the stack and the sandbox stand-ins (real HTTP on loopback),
told by fault rules what to answer for one key's requests each (``match_body`` / ``path``
name that key's token, payment id or user id), so the cases of one test run side by side.
After the results are in, every check compares the sandbox gateway's own records
(authorizations, customers, attached tokens, cancellations) with Postgres and the events.
The table these cases follow is "The table of answers" in docs/dependencies.md.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

import pytest
from sqlalchemy import Engine, text

from clients.gateway import HttpGateway
from clients.http import ResilientHttp, build_http_client
from config.settings import GatewaySettings, Settings
from domain.ports import idempotency_key
from sandbox.faults import FaultRule
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer
from tests.factories import add_payment_method, command, encode
from tests.support.harness import WorkerProcess, free_port, produce, read_topic

RESULTS_TIMEOUT_SECONDS = 90.0


class MeteredWorker(WorkerProcess):
    """A worker process whose ``/metrics`` the test reads."""

    def metric(self, name: str, labels: str) -> float:
        """The sum of the samples of ``name`` whose labels contain every ``k="v"`` given."""
        url = f"http://127.0.0.1:{self.settings.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text_format = response.read().decode()
        wanted = [part for part in labels.split(",") if part]
        total = 0.0
        for line in text_format.splitlines():
            if line.startswith(f"{name}{{") and all(part in line for part in wanted):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[MeteredWorker]:
    process = MeteredWorker(
        settings.model_copy(update={"metrics_port": free_port(), "metrics_host": "127.0.0.1"}),
        tmp_path / "worker.log",
    )
    process.start()
    yield process
    process.stop()


def _pay(payment_id: str, user_id: str | None, token: str) -> dict[str, Any]:
    payload = {
        "paymentId": payment_id,
        "orderId": f"order-{payment_id}",
        "amount": 1500,
        "currency": "EUR",
        "gatewayToken": token,
    }
    if user_id is not None:
        payload["customer"] = {"name": "Pay Er", "email": "payer@example.com"}
    return command("InitiatePayment", user_id, payload)


def _card(
    user_id: str,
    fingerprint: str,
    *,
    token: str | None = None,
    exp_year: int = 2030,
    carried: bool = True,
) -> dict[str, Any]:
    card = add_payment_method(user_id, fingerprint=fingerprint, exp_year=exp_year)
    if token is not None:
        card["payload"]["gatewayToken"] = token
    if carried:
        card["payload"]["customer"] = {"name": "Card Holder", "email": "holder@example.com"}
    return card


def _key(document: dict[str, Any]) -> bytes:
    if document["userId"] is not None:
        return str(document["userId"]).encode()
    return str(document["payload"]["paymentId"]).encode()


def _run(
    settings: Settings, worker: WorkerProcess, commands: list[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Produce the commands in order; their results by command id."""
    produce(settings, [(_key(c), encode(c)) for c in commands])
    records = read_topic(
        settings, settings.topic_results, expected=len(commands), timeout=RESULTS_TIMEOUT_SECONDS
    )
    results = {r.json()["commandId"]: r.json() for r in records}
    missing = [c["type"] for c in commands if c["commandId"] not in results]
    assert not missing, f"no result for {missing}\n{worker.log()[-4000:]}"
    return results


def _events(settings: Settings, expected: int) -> list[dict[str, Any]]:
    return [r.json() for r in read_topic(settings, settings.topic_events, expected=expected)]


def _payments(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT payment_id, status FROM payments")).all()
    return {row.payment_id: row.status for row in rows}


def _customer_references(engine: Engine) -> dict[str, str]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT user_id, customer_id FROM gateway_customers")).all()
    return {row.user_id: row.customer_id for row in rows}


def _by_reference(records: dict[str, Any], kind: str) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records[kind]:
        found.setdefault(str(record["reference"]), []).append(record)
    return found


def _assert_authorizations_agree(
    records: dict[str, Any], payments: dict[str, str], events: list[dict[str, Any]]
) -> None:
    """Every approved authorization is a stored authorized payment's, and the other way."""
    authorized = {
        e["payload"]["paymentId"]: e["payload"]["authorizationId"]
        for e in events
        if e["type"] == "PaymentAuthorized"
    }
    approved = {
        a["id"]: a["reference"] for a in records["authorizations"] if a["status"] == "approved"
    }
    for authorization_id, payment_id in approved.items():
        assert payments.get(payment_id) == "authorized", (payment_id, payments.get(payment_id))
        assert authorized.get(payment_id) == authorization_id, payment_id
    for payment_id, status in payments.items():
        if status == "authorized":
            assert authorized[payment_id] in approved, payment_id


def test_adverse_authorization_answers_end_with_gateway_and_postgres_agreeing(
    settings: Settings,
    engine: Engine,
    worker: MeteredWorker,
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    gateway = sandbox_gateway.gateway
    authorizations = "/v1/authorizations"
    gateway.add_faults(
        [
            # A request with this key still in flight: 409, then the first answer.
            FaultRule(status=409, path=authorizations, match_body="tok_guest_busy", times=3),
            # Refused credentials, then accepted again.
            FaultRule(status=401, path=authorizations, match_body="tok_guest_unauth", times=2),
            # A rate limit that says when to come back.
            FaultRule(
                status=429,
                path=authorizations,
                match_body="tok_guest_limited",
                times=2,
                headers={"Retry-After": "1"},
            ),
            # Charged, then an answer that arrives after the client's 2 s timeout.
            FaultRule(
                status=201,
                path=authorizations,
                match_body="tok_guest_late",
                delay_seconds=3.0,
                effect=True,
                body={"late": True},
            ),
            # Charged, then a 500: the retry with the same key gets the stored answer.
            FaultRule(status=500, path=authorizations, match_body="tok_guest_failed", effect=True),
            # Answers that do not say whether the gateway authorized.
            # (every time: the retry after the refused cancels gets the 422 again)
            FaultRule(
                status=422,
                path=authorizations,
                match_body="tok_guest_conflict",
                effect=True,
                times=-1,
            ),
            FaultRule(
                status=201,
                path=authorizations,
                match_body="tok_guest_pending",
                effect=True,
                body={"id": "auth_pending", "status": "pending"},
            ),
            FaultRule(
                status=200,
                path=authorizations,
                match_body="tok_guest_html",
                raw="<html>",
                effect=True,
            ),
            # The cancel of pay-conflict is refused twice before the gateway takes it.
            FaultRule(status=400, path="/cancel", match_body="pay-conflict", times=2),
            # A request the gateway refuses: nothing is created, a decline.
            FaultRule(status=402, path=authorizations, match_body="tok_guest_refused"),
        ]
    )
    names = [
        "busy",
        "unauth",
        "limited",
        "late",
        "failed",
        "conflict",
        "pending",
        "html",
        "refused",
    ]
    commands = [_pay(f"pay-{name}", None, f"tok_guest_{name}") for name in names]
    results = _run(settings, worker, commands)

    assert {r["status"] for r in results.values()} == {"accepted"}, results
    payments = _payments(engine)
    expected_status = {
        "busy": "authorized",
        "unauth": "authorized",
        "limited": "authorized",
        "late": "authorized",
        "failed": "authorized",
        "conflict": "declined",
        "pending": "declined",
        "html": "declined",
        "refused": "declined",
    }
    assert payments == {f"pay-{name}": status for name, status in expected_status.items()}
    events = _events(settings, expected=2 * len(names))
    declines = {
        e["payload"]["paymentId"]: e["payload"]["declineCode"]
        for e in events
        if e["type"] == "PaymentDeclined"
    }
    assert declines == {
        "pay-conflict": "authorization_cancelled",
        "pay-pending": "authorization_cancelled",
        "pay-html": "authorization_cancelled",
        "pay-refused": "gateway_refused_request",
    }

    records = gateway.records()
    by_payment = _by_reference(records, "authorizations")
    # One authorization per payment at most, whatever was retried.
    assert all(len(made) == 1 for made in by_payment.values()), by_payment
    for name in ("conflict", "pending", "html"):
        (made,) = by_payment[f"pay-{name}"]
        assert made["status"] == "voided", made  # approved, then cancelled
    assert "pay-refused" not in by_payment
    cancelled = {c["reference"] for c in records["cancellations"]}
    assert cancelled == {"pay-conflict", "pay-pending", "pay-html"}
    _assert_authorizations_agree(records, payments, events)

    assert (
        worker.metric("payment_worker_orphan_authorizations_total", 'reason="outcome_unknown"') == 3
    )
    for answer in ("busy", "unauthorized", "key_conflict", "unexpected", "refused"):
        assert (
            worker.metric(
                "payment_worker_adverse_answers_total", f'service="gateway",answer="{answer}"'
            )
            >= 1
        ), answer


def test_an_authorization_made_for_a_payment_id_another_key_stored_is_cancelled(
    settings: Settings,
    engine: Engine,
    worker: MeteredWorker,
    sandbox_gateway: SandboxGatewayServer,
) -> None:
    winner = _pay("pay-shared", None, "tok_guest_winner")
    loser = _pay("pay-shared", "user-loser", "tok_user_loser")
    # The loser authorized on an earlier try, before the winner's worker stored the id
    # (two workers deciding one payment id at once): its request is at the gateway.
    direct = HttpGateway(
        ResilientHttp(
            build_http_client(sandbox_gateway_settings(sandbox_gateway)),
            sandbox_gateway_settings(sandbox_gateway),
            name="test-gateway",
        )
    )
    early = direct.authorize(
        payment_id="pay-shared",
        amount=1500,
        currency="EUR",
        gateway_token="tok_user_loser",
        idempotency_key=idempotency_key(UUID(loser["commandId"]), "authorize"),
    )
    assert early.approved
    # A third command whose id nobody authorized: its cancel finds nothing, and a late
    # request with its authorization key would be refused.
    bystander = _pay("pay-shared", "user-bystander", "tok_user_bystander")

    # The winner first: commands of different keys have no order between them.
    results = _run(settings, worker, [winner])
    results.update(_run(settings, worker, [loser, bystander]))

    assert results[winner["commandId"]]["status"] == "accepted"
    for document in (loser, bystander):
        result = results[document["commandId"]]
        assert (result["status"], result["reason"]) == ("rejected", "payment_id_taken")
    records = sandbox_gateway.gateway.records()
    statuses = sorted(a["status"] for a in records["authorizations"])
    assert statuses == ["approved", "voided"], records["authorizations"]
    assert _payments(engine) == {"pay-shared": "authorized"}
    cancels = {c["requestKey"]: c["authorization"] for c in records["cancellations"]}
    assert cancels[idempotency_key(UUID(loser["commandId"]), "authorize")] == early.authorization_id
    assert cancels[idempotency_key(UUID(bystander["commandId"]), "authorize")] is None
    _assert_authorizations_agree(records, _payments(engine), _events(settings, expected=2))
    assert (
        worker.metric("payment_worker_orphan_authorizations_total", 'reason="payment_id_taken"')
        == 1
    )
    assert (
        worker.metric("payment_worker_authorization_cancels_total", 'reason="payment_id_taken"')
        == 2
    )


def sandbox_gateway_settings(server: SandboxGatewayServer) -> GatewaySettings:
    return GatewaySettings(base_url=server.url, allow_plain_http_on_loopback=True)


def test_saved_cards_and_customers_agree_with_the_gateway(
    settings: Settings,
    engine: Engine,
    worker: MeteredWorker,
    sandbox_gateway: SandboxGatewayServer,
    user_service: UserServiceStubServer,
) -> None:
    gateway = sandbox_gateway.gateway
    gateway.add_faults(
        [
            # The card is refused after the customer was created.
            FaultRule(status=402, path="/payment-methods", match_body="tok_refused_card"),
            # Created, then a 500: the retry with the same key gets the same customer.
            FaultRule(
                status=500,
                path="/v1/customers",
                method="POST",
                match_body="user-created-twice",
                effect=True,
            ),
            # A customer created without an id in the answer.
            FaultRule(
                status=201, path="/v1/customers", match_body="user-no-id", effect=True, body={}
            ),
        ]
    )
    user_service.stub.add_faults(
        [
            FaultRule(status=200, path="user-bad-profile", body={"name": "X", "email": None}),
            FaultRule(status=400, path="user-refused-lookup"),
        ]
    )
    refused = _card("user-refused", "fp_refused_0001", token="tok_refused_card")
    erase_refused = command("EraseUserData", "user-refused", {})
    first = _card("user-readd", "fp_readd_00001", token="tok_readd_old", exp_year=2030)
    again = _card("user-readd", "fp_readd_00001", token="tok_readd_new", exp_year=2031)
    removed = _card("user-remove", "fp_remove_0001", token="tok_remove_me")
    kept = _card("user-remove", "fp_remove_0002", token="tok_keep_me")
    remove = command(
        "RemovePaymentMethod",
        "user-remove",
        {"paymentMethodId": _method_id(removed)},
    )
    twice = _card("user-created-twice", "fp_twice_00001", token="tok_twice")
    no_id = _card("user-no-id", "fp_noid_000001", token="tok_no_id")
    bad_profile = _card("user-bad-profile", "fp_badprof_001", carried=False)
    refused_lookup = _card("user-refused-lookup", "fp_refused_002", carried=False)
    commands = [
        refused,
        erase_refused,
        first,
        again,
        removed,
        kept,
        remove,
        twice,
        no_id,
        bad_profile,
        refused_lookup,
    ]
    results = _run(settings, worker, commands)

    def outcome(document: dict[str, Any]) -> tuple[str, str]:
        result = results[document["commandId"]]
        return result["status"], result["reason"]

    assert outcome(refused) == ("rejected", "gateway_refused")
    assert outcome(erase_refused) == ("accepted", "ok")
    assert outcome(again) == ("accepted", "ok")
    assert outcome(no_id) == ("rejected", "gateway_unexpected_answer")
    assert outcome(bad_profile) == ("rejected", "user_profile_unusable")
    assert outcome(refused_lookup) == ("rejected", "user_profile_unusable")
    for document in (first, removed, kept, remove, twice):
        assert outcome(document) == ("accepted", "ok"), document["type"]

    records = gateway.records()
    live = {c["reference"]: c for c in records["customers"]}
    deleted = {c["reference"] for c in records["deletedCustomers"]}
    references = _customer_references(engine)
    # The refused card's customer was kept, so the erasure could delete it.
    assert "user-refused" in deleted
    assert "user-refused" not in live
    assert "user-refused" not in references
    # A re-added card's old token was detached; a removed card's too.
    assert set(live["user-readd"]["tokens"]) == {"tok_readd_new"}
    assert set(live["user-remove"]["tokens"]) == {"tok_keep_me"}
    # Created once although its first answer was a 500.
    assert len([c for c in records["customers"] if c["reference"] == "user-created-twice"]) == 1
    # The customer without an id in the answer holds no personal data, and is not stored.
    assert live["user-no-id"]["hasProfile"] is False
    assert "user-no-id" not in references
    # No customer at all for users without a usable profile.
    assert "user-bad-profile" not in live
    assert "user-refused-lookup" not in live
    # Every stored reference is a live customer of that user, with its profile set.
    for user_id, customer_id in references.items():
        assert live[user_id]["id"] == customer_id, user_id
        assert live[user_id]["hasProfile"], user_id
    # Every active stored method's token is attached to its user's customer.
    with engine.connect() as connection:
        methods = connection.execute(
            text("SELECT user_id, gateway_token, active FROM payment_methods")
        ).all()
    for method in methods:
        attached = method.gateway_token in live.get(method.user_id, {}).get("tokens", [])
        assert attached == method.active, (method.user_id, method.gateway_token, method.active)
    assert (
        worker.metric(
            "payment_worker_adverse_answers_total",
            'service="user_service",answer="unusable_profile"',
        )
        == 2
    )


def _method_id(add: dict[str, Any]) -> str:
    return str(uuid5(UUID(add["commandId"]), "payment-method"))


def test_a_changed_profile_between_two_tries_changes_no_request_body(
    settings: Settings,
    engine: Engine,
    tmp_path: Path,
    sandbox_gateway: SandboxGatewayServer,
    user_service: UserServiceStubServer,
) -> None:
    """The User Service answers one profile, then another. Between the two, the worker is
    killed after a card's attach and a payment's authorization took effect at the gateway
    (their answers were lost). The next worker looks the profiles up again and repeats
    every call: the sandbox answers a repeated key with another body 422, which would
    reject the card or cancel the payment, so both succeeding on the first calls' records
    shows that no request body changed with the profile."""
    # The killed worker's partitions move on after its session times out.
    settings = settings.model_copy(update={"kafka_session_timeout_ms": 6000})
    gateway = sandbox_gateway.gateway
    old_profile = {"name": "Old Name", "email": "old@example.com"}
    user_service.stub.add_faults(
        [FaultRule(status=200, path="user-moved", body=old_profile, times=2)]
    )
    # Taken, then the answer is lost, until the first worker is killed.
    gateway.add_faults(
        [
            FaultRule(status=503, match_body=token, effect=True, times=-1)
            for token in ("tok_moved_card", "tok_moved_pay")
        ]
    )
    card = _card("user-moved", "fp_moved_00001", token="tok_moved_card", carried=False)
    payment = _pay("pay-moved", "user-moved-pay", "tok_moved_pay")
    del payment["payload"]["customer"]  # a user's payment whose email the gateway must get
    first = WorkerProcess(settings, tmp_path / "first.log")
    first.start()
    try:
        produce(settings, [(_key(card), encode(card)), (_key(payment), encode(payment))])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            records = gateway.records()
            attached = any("tok_moved_card" in c["tokens"] for c in records["customers"])
            if attached and records["authorizations"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the first worker's calls did not arrive\n{first.log()[-3000:]}")
    finally:
        first.kill()
    gateway.clear_faults()  # the User Service now answers its default profile: another one

    second = WorkerProcess(settings, tmp_path / "second.log")
    second.start()
    try:
        results = _run(settings, second, [card, payment])
    finally:
        second.stop()

    assert [results[c["commandId"]]["reason"] for c in (card, payment)] == ["ok", "ok"]
    assert _payments(engine) == {"pay-moved": "authorized"}
    records = gateway.records()
    live = {c["reference"]: c for c in records["customers"]}
    assert set(live) == {"user-moved", "user-moved-pay"}  # one customer each, not two
    assert live["user-moved"]["tokens"] == ["tok_moved_card"]
    assert all(customer["hasProfile"] for customer in live.values())
    assert _customer_references(engine) == {u: c["id"] for u, c in live.items()}
    (authorization,) = records["authorizations"]  # the first worker's, replayed
    assert authorization["status"] == "approved"
    assert authorization["customer"] == live["user-moved-pay"]["id"]
    assert records["cancellations"] == []
    assert user_service.stub.calls == 4  # each worker asked for both, and got two profiles
