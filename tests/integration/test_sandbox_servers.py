"""The sandbox servers over real HTTP on loopback: delayed answers without a thread each
(sandbox/json_server.py), and the gateway's contract (sandbox/gateway_server.py).

That thousands of calls wait at once is read from the server's own counters and the
process's thread count, not from timings. The gateway's tests cover customers and their
profiles, idempotent replays, 422 and 409 (a delayed answer), cancels before and after
the authorization, the records, and a restart on the same port keeping the state.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from sandbox.gateway_server import SandboxGatewayServer
from sandbox.json_server import raise_open_file_limit
from sandbox.user_service_server import UserServiceStubServer
from tests.support.harness import REPOSITORY, free_port

pytestmark = pytest.mark.integration

WAITING_CALLS = 2_000


def _authorization(index: int) -> bytes:
    body = json.dumps({"token": f"tok_wait_{index}", "reference": f"pay-{index}"}).encode()
    return (
        "POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Idempotency-Key: wait-{index}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _send_and_wait(port: int, server: SandboxGatewayServer) -> int:
    """Open the connections, send one call on each, and return once all of them wait."""
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(WAITING_CALLS)]
    for index, (_, writer) in enumerate(connections):
        writer.write(_authorization(index))
    deadline = time.monotonic() + 60
    while server.counters.waiting < WAITING_CALLS and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    waiting = server.counters.waiting
    for _, writer in connections:
        writer.close()
    return waiting


def test_thousands_of_delayed_answers_wait_at_once_in_one_thread() -> None:
    raise_open_file_limit()
    # Answers that would come long after the test: they all wait until the server stops.
    server = SandboxGatewayServer(answer_delay_seconds=600).start()
    threads_before = threading.active_count()
    try:
        port = int(server.url.rsplit(":", 1)[1])
        waiting = asyncio.run(_send_and_wait(port, server))
        assert waiting == WAITING_CALLS
        assert server.counters.max_waiting == WAITING_CALLS
        assert threading.active_count() == threads_before  # no thread per call
        # Every call took effect at once; only its answer is held back.
        assert server.gateway.stats()["authorizations"] == WAITING_CALLS
    finally:
        server.stop()


def test_a_delayed_answer_arrives_and_keeps_its_behaviour() -> None:
    server = SandboxGatewayServer(answer_delay_seconds=0.05).start()
    try:
        with httpx.Client(base_url=server.url) as sandbox_client:
            body = {"token": "tok_decline_x", "reference": "pay-1"}
            first = sandbox_client.post(
                "/v1/authorizations", json=body, headers={"Idempotency-Key": "k"}
            )
            again = sandbox_client.post(
                "/v1/authorizations", json=body, headers={"Idempotency-Key": "k"}
            )
            other = sandbox_client.post(
                "/v1/authorizations", json={"token": "tok"}, headers={"Idempotency-Key": "k"}
            )
            stats = sandbox_client.get("/v1/_sandbox/stats").json()
        assert first.status_code == again.status_code == 201
        assert first.json() == again.json()
        assert first.json()["status"] == "declined"
        assert other.status_code == 422
        assert stats["authorizations"] == 1
        assert stats["replays"] == 1
        assert stats["maxAnswersWaiting"] >= 1
    finally:
        server.stop()


def test_the_user_service_stand_in_can_delay_its_answers_too() -> None:
    server = UserServiceStubServer(answer_delay_seconds=0.05).start()
    try:
        with httpx.Client(base_url=server.url) as sandbox_client:
            profile = sandbox_client.get("/v1/users/user-1/profile")
            unknown = sandbox_client.get("/v1/users/unknown-1/profile")
            stats = sandbox_client.get("/v1/_sandbox/stats").json()
        assert profile.status_code == 200
        assert profile.json()["email"] == "user-1@profiles.example"
        assert unknown.status_code == 404
        assert stats["calls"] == 2
        assert stats["maxAnswersWaiting"] >= 1
    finally:
        server.stop()


# The gateway's contract (the shared spec of issue 13): real HTTP on loopback.


def _encode(body: object) -> bytes:
    """Request bodies are byte-identical on every try, as the worker's are."""
    return json.dumps(body, separators=(",", ":")).encode()


def _send(port: int, path: str, body: dict[str, object], key: str) -> socket.socket:
    """Sends one POST on its own connection and returns it unread (its answer may wait)."""
    data = _encode(body)
    connection = socket.create_connection(("127.0.0.1", port), timeout=5)
    connection.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
        + data
    )
    return connection


def _read(connection: socket.socket) -> tuple[int, dict[str, object]] | None:
    """The answer on a ``Connection: close`` connection, or None when it closed without one."""
    chunks = []
    with connection:
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    if not chunks:
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _wait_until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.005)


def _authorize(token: str, reference: str, customer: str | None = None) -> dict[str, object]:
    return {
        "reference": reference,
        "amount": 1250,
        "currency": "EUR",
        "token": token,
        "customer": customer,
    }


def _post(sandbox_client: httpx.Client, path: str, body: object, key: str) -> httpx.Response:
    return sandbox_client.post(path, content=_encode(body), headers={"Idempotency-Key": key})


def test_a_customer_is_created_by_reference_and_its_profile_is_checked_never_kept(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    created = _post(sandbox_client, "/v1/customers", {"reference": "user-1"}, "c1")
    assert created.status_code == 201
    customer = created.json()["id"]
    assert customer.startswith("cus_")
    assert sandbox_gateway.gateway.records()["customers"] == [
        {"id": customer, "reference": "user-1", "hasProfile": False, "tokens": []}
    ]

    profile = {"name": "Ada Lovelace", "email": "ada@example.org"}
    for key, bad in [
        ("p-empty", {"name": "", "email": "ada@example.org"}),
        ("p-blank", {"name": "  ", "email": "ada@example.org"}),
        ("p-no-at", {"name": "Ada", "email": "ada.example.org"}),
        ("p-missing", {"name": "Ada"}),
    ]:
        assert _post(sandbox_client, f"/v1/customers/{customer}", bad, key).status_code == 400
    assert sandbox_gateway.gateway.records()["customers"][0]["hasProfile"] is False
    assert _post(sandbox_client, "/v1/customers/cus_nobody", profile, "p-404").status_code == 404

    first = _post(sandbox_client, f"/v1/customers/{customer}", profile, "p1")
    again = _post(
        sandbox_client, f"/v1/customers/{customer}", profile, "p2"
    )  # the same values: harmless
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"id": customer}
    records = sandbox_client.get("/v1/_sandbox/records").json()
    assert records["customers"] == [
        {"id": customer, "reference": "user-1", "hasProfile": True, "tokens": []}
    ]
    assert "Ada" not in json.dumps(records)
    assert "ada@example.org" not in json.dumps(records)


def test_the_older_create_with_a_profile_is_checked_too(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    bad = _post(sandbox_client, "/v1/customers", {"name": "Ada", "email": "nope"}, "old-bad")
    good = _post(sandbox_client, "/v1/customers", {"name": "Ada", "email": "a@b.c"}, "old-good")
    assert bad.status_code == 400
    assert good.status_code == 201
    (customer,) = sandbox_gateway.gateway.records()["customers"]
    assert customer == {
        "id": good.json()["id"],
        "reference": None,
        "hasProfile": True,
        "tokens": [],
    }


def test_cards_and_deletion_need_a_live_customer(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    customer = _post(sandbox_client, "/v1/customers", {"reference": "user-2"}, "c2").json()["id"]
    base = f"/v1/customers/{customer}"
    attach_a = _post(sandbox_client, f"{base}/payment-methods", {"token": "tok_a"}, "a1")
    attach_b = _post(sandbox_client, f"{base}/payment-methods", {"token": "tok_b"}, "a2")
    detach_a = _post(sandbox_client, f"{base}/payment-methods/detach", {"token": "tok_a"}, "d1")
    assert (attach_a.status_code, attach_a.json()) == (201, {"attached": True})
    assert attach_b.status_code == 201
    assert (detach_a.status_code, detach_a.json()) == (200, {"detached": True})
    assert sandbox_gateway.gateway.records()["customers"][0]["tokens"] == ["tok_b"]
    assert sandbox_gateway.gateway.stats()["attachedTokens"] == 1

    deleted = _post(sandbox_client, f"{base}/delete", {}, "del1")
    assert (deleted.status_code, deleted.json()) == (200, {"deleted": True})
    for path, key in [
        (f"{base}/payment-methods", "a3"),
        (f"{base}/payment-methods/detach", "d2"),
        (f"{base}/delete", "del2"),
        (base, "p3"),
    ]:
        answer = _post(sandbox_client, path, {"token": "tok_c", "name": "A", "email": "a@b"}, key)
        assert answer.status_code == 404, path
        assert answer.json() == {"error": "no such customer"}
    records = sandbox_gateway.gateway.records()
    assert records["customers"] == []
    assert records["deletedCustomers"] == [{"id": customer, "reference": "user-2"}]
    stats = sandbox_gateway.gateway.stats()
    assert (stats["customers"], stats["deletedCustomers"]) == (0, 1)


def test_a_repeated_key_replays_the_first_answer_and_another_body_is_refused(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    body = _authorize("tok_ok", "pay-1")
    first = _post(sandbox_client, "/v1/authorizations", body, "k1")
    again = _post(sandbox_client, "/v1/authorizations", body, "k1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["status"] == "approved"

    changed = _post(sandbox_client, "/v1/authorizations", {**body, "amount": 1}, "k1")
    other_path = _post(sandbox_client, "/v1/customers", body, "k1")
    for refused in (changed, other_path):
        assert refused.status_code == 422
        assert refused.json() == {"error": "key reused with another body"}
    assert sandbox_gateway.gateway.stats()["authorizations"] == 1
    assert sandbox_gateway.gateway.stats()["replays"] == 1
    assert sandbox_gateway.gateway.stats()["customers"] == 0


def test_answers_of_500_and_more_are_not_kept_and_a_retry_runs_again(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    body = _authorize("tok_ok", "pay-2")
    sandbox_gateway.gateway.available = False
    outage = _post(sandbox_client, "/v1/authorizations", body, "k2")
    sandbox_gateway.gateway.available = True
    retried = _post(sandbox_client, "/v1/authorizations", body, "k2")
    assert outage.status_code == 503
    assert retried.status_code == 201
    unavailable = _authorize("tok_unavailable", "pay-3")
    assert _post(sandbox_client, "/v1/authorizations", unavailable, "k3").status_code == 503
    assert _post(sandbox_client, "/v1/authorizations", unavailable, "k3").status_code == 503
    assert sandbox_gateway.gateway.stats()["authorizations"] == 1
    assert sandbox_gateway.gateway.stats()["replays"] == 0


def test_requests_without_a_key_or_a_json_object_are_refused(sandbox_client: httpx.Client) -> None:
    no_key = sandbox_client.post("/v1/authorizations", json=_authorize("tok_ok", "pay-4"))
    not_json = sandbox_client.post(
        "/v1/authorizations", content=b"<xml/>", headers={"Idempotency-Key": "k4"}
    )
    assert no_key.status_code == 400
    assert not_json.status_code == 400


def test_a_key_in_flight_is_answered_409_until_its_answer_is_written(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    body = _authorize("tok_wait00300ms_a", "pay-5")
    pending = _send(sandbox_gateway.port, "/v1/authorizations", body, "k5")
    _wait_until(lambda: sandbox_gateway.counters.waiting == 1)
    # Its effect is immediate; only its answer waits.
    assert sandbox_gateway.gateway.stats()["authorizations"] == 1
    busy = _post(sandbox_client, "/v1/authorizations", body, "k5")
    busy_other_body = _post(sandbox_client, "/v1/authorizations", {**body, "amount": 2}, "k5")
    for refused in (busy, busy_other_body):
        assert refused.status_code == 409
        assert refused.json() == {"error": "request with this key in progress"}
    first = _read(pending)
    assert first is not None
    assert first[0] == 201
    replay = _post(sandbox_client, "/v1/authorizations", body, "k5")
    assert (replay.status_code, replay.json()) == (201, first[1])
    assert sandbox_gateway.gateway.stats()["authorizations"] == 1


def test_a_key_stays_in_flight_until_its_answer_was_due_though_the_client_gave_up(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    slow = _authorize("tok_slow_b", "pay-6")
    pending = _send(sandbox_gateway.port, "/v1/authorizations", slow, "k6")
    _wait_until(lambda: sandbox_gateway.counters.waiting == 1)
    pending.close()  # a client timeout: the answer (due after 3 s) will never be written
    _wait_until(lambda: sandbox_gateway.counters.waiting == 0)
    assert _post(sandbox_client, "/v1/authorizations", slow, "k6").status_code == 409

    body = _authorize("tok_wait00300ms_c", "pay-6c")
    started = time.monotonic()
    _send(sandbox_gateway.port, "/v1/authorizations", body, "k6c").close()
    _wait_until(lambda: sandbox_gateway.gateway.stats()["authorizations"] == 2)
    assert _post(sandbox_client, "/v1/authorizations", body, "k6c").status_code == 409
    _wait_until(lambda: time.monotonic() - started > 0.35)
    retried = _post(sandbox_client, "/v1/authorizations", body, "k6c")
    record = sandbox_gateway.gateway.records()["authorizations"][1]
    assert retried.status_code == 201
    assert retried.json() == {"id": record["id"], "status": "approved"}


def test_cancel_after_authorize_voids_an_approval_and_leaves_a_decline(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    approved = _post(sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-7"), "auth-7")
    declined = _post(
        sandbox_client, "/v1/authorizations", _authorize("tok_decline", "pay-8"), "auth-8"
    )
    cancels = [
        _post(
            sandbox_client, "/v1/authorizations/cancel", {"requestKey": k, "reference": r}, f"c-{k}"
        )
        for k, r in [("auth-7", "pay-7"), ("auth-8", "pay-8")]
    ]
    assert [c.status_code for c in cancels] == [200, 200]
    assert [c.json() for c in cancels] == [
        {"cancelled": True, "authorization": approved.json()["id"]},
        {"cancelled": True, "authorization": declined.json()["id"]},
    ]
    # The cancel request is idempotent under its own key.
    again = _post(
        sandbox_client,
        "/v1/authorizations/cancel",
        {"requestKey": "auth-7", "reference": "pay-7"},
        "c-auth-7",
    )
    assert again.json() == cancels[0].json()
    records = sandbox_gateway.gateway.records()
    assert [(a["reference"], a["status"], a["declineCode"]) for a in records["authorizations"]] == [
        ("pay-7", "voided", None),
        ("pay-8", "declined", "insufficient_funds"),
    ]
    assert records["cancellations"] == [
        {"requestKey": "auth-7", "reference": "pay-7", "authorization": approved.json()["id"]},
        {"requestKey": "auth-8", "reference": "pay-8", "authorization": declined.json()["id"]},
    ]
    # The authorize request's stored answer is still its first one.
    replay = _post(sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-7"), "auth-7")
    assert replay.json() == approved.json()
    no_key = _post(sandbox_client, "/v1/authorizations/cancel", {"reference": "pay-7"}, "c-none")
    assert no_key.status_code == 400


def test_cancel_before_authorize_tombstones_the_key_and_the_late_authorize_is_declined(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    cancel = {"requestKey": "auth-9", "reference": "pay-9"}
    cancelled = _post(sandbox_client, "/v1/authorizations/cancel", cancel, "c-9")
    assert (cancelled.status_code, cancelled.json()) == (
        200,
        {"cancelled": True, "authorization": None},
    )
    late = _post(
        sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-9", "cus_1"), "auth-9"
    )
    assert late.status_code == 201
    late_id = late.json()["id"]
    assert late.json() == {"id": late_id, "status": "declined", "declineCode": "cancelled"}
    replay = _post(
        sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-9", "cus_1"), "auth-9"
    )
    assert replay.json() == late.json()
    # A tombstoned key is declined even where the token would have been an outage.
    cancel_10 = {"requestKey": "auth-10", "reference": "pay-10"}
    _post(sandbox_client, "/v1/authorizations/cancel", cancel_10, "c-10")
    outage = _post(
        sandbox_client, "/v1/authorizations", _authorize("tok_unavailable", "pay-10"), "auth-10"
    )
    assert (outage.status_code, outage.json()["declineCode"]) == (201, "cancelled")
    # A second cancel finds the declined authorization and leaves it so.
    second = _post(sandbox_client, "/v1/authorizations/cancel", cancel, "c-9-again")
    assert second.json() == {"cancelled": True, "authorization": late_id}

    records = sandbox_gateway.gateway.records()
    assert records["cancellations"] == [
        {"requestKey": "auth-9", "reference": "pay-9", "authorization": None},
        {"requestKey": "auth-10", "reference": "pay-10", "authorization": None},
        {"requestKey": "auth-9", "reference": "pay-9", "authorization": late_id},
    ]
    assert records["authorizations"][0] == {
        "id": late_id,
        "requestKey": "auth-9",
        "reference": "pay-9",
        "status": "declined",
        "declineCode": "cancelled",
        "customer": "cus_1",
        "amount": 1250,
        "currency": "EUR",
        "token": "tok_ok",
    }
    assert [a["status"] for a in records["authorizations"]] == ["declined", "declined"]


def test_records_over_http_are_the_python_records_and_stats_keep_their_keys(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    customer = _post(sandbox_client, "/v1/customers", {"reference": "user-r"}, "c-r").json()["id"]
    _post(sandbox_client, f"/v1/customers/{customer}/payment-methods", {"token": "tok_r"}, "a-r")
    _post(sandbox_client, "/v1/authorizations", _authorize("tok_r", "pay-r", customer), "auth-r")
    _post(sandbox_client, "/v1/authorizations/cancel", {"requestKey": "x", "reference": "y"}, "c-x")
    over_http = sandbox_client.get("/v1/_sandbox/records")
    assert over_http.status_code == 200
    assert over_http.json() == sandbox_gateway.gateway.records()
    assert over_http.json()["authorizations"][0]["customer"] == customer
    stats = sandbox_client.get("/v1/_sandbox/stats").json()
    assert {
        "authorizations": 1,
        "customers": 1,
        "attachedTokens": 1,
        "deletedCustomers": 0,
        "cancellations": 1,
        "replays": 0,
        "faultsAnswered": 0,
    }.items() <= stats.items()
    assert {
        "requests",
        "openConnections",
        "maxOpenConnections",
        "answersWaiting",
        "maxAnswersWaiting",
    } <= set(stats)
    assert sandbox_client.get("/v1/_sandbox/nothing").status_code == 404


def test_a_new_server_on_the_same_port_serves_the_same_state() -> None:
    first = SandboxGatewayServer().start()
    port, url = first.port, first.url
    try:
        with httpx.Client(base_url=first.url, timeout=5) as sandbox_client:
            stored = _post(
                sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-s"), "s1"
            )
            tomb = {"requestKey": "s3", "reference": "pay-t"}
            _post(sandbox_client, "/v1/authorizations/cancel", tomb, "c-s3")
        in_flight_body = _authorize("tok_wait02000ms_s", "pay-f")
        pending = _send(port, "/v1/authorizations", in_flight_body, "s2")
        given_up_body = _authorize("tok_wait05000ms_g", "pay-g")
        _send(port, "/v1/authorizations", given_up_body, "s4").close()
        _wait_until(lambda: first.gateway.stats()["authorizations"] == 3)
    finally:
        first.stop()
    assert _read(pending) is None  # lost with the stopped server, like a crashed process's

    second = SandboxGatewayServer(port=port, gateway=first.gateway).start()
    try:
        assert second.url == url
        with httpx.Client(base_url=second.url, timeout=5) as sandbox_client:
            replay = _post(
                sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-s"), "s1"
            )
            retried = _post(sandbox_client, "/v1/authorizations", in_flight_body, "s2")
            given_up = _post(sandbox_client, "/v1/authorizations", given_up_body, "s4")
            late = _post(sandbox_client, "/v1/authorizations", _authorize("tok_ok", "pay-t"), "s3")
            changed = _post(
                sandbox_client, "/v1/authorizations", _authorize("tok_x", "pay-s"), "s1"
            )
            stats = sandbox_client.get("/v1/_sandbox/stats").json()
        assert (replay.status_code, replay.json()) == (201, stored.json())
        # Their stored answers: the keys are not in flight any more.
        assert (retried.status_code, given_up.status_code) == (201, 201)
        assert late.json()["declineCode"] == "cancelled"
        assert changed.status_code == 422
        assert stats["authorizations"] == 4
        assert stats["replays"] == 3
        assert stats["requests"] == 6  # the server's counters are the new server's own
    finally:
        second.stop()


@pytest.mark.parametrize("kind", ["gateway", "user-service"])
def test_the_sandbox_command_stops_on_sigterm_with_status_0(kind: str) -> None:
    # In a container it is the first process, which has no default action for SIGTERM.
    port = free_port()
    command = [sys.executable, "-m", "pipelines.cli", "sandbox", kind, "--port", str(port)]
    process = subprocess.Popen(command, cwd=REPOSITORY, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()
