"""Scripted faults of the sandbox services (sandbox/faults.py), over real HTTP on loopback.

Each option of a rule is shown on the gateway or the User Service stand-in: which requests
it matches (path, method, matchBody), how many (times, -1, clear), what it answers (status,
JSON or raw body, headers, delay) and whether the request took effect first (effect).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from sandbox.faults import FaultRule
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer

pytestmark = pytest.mark.integration


@pytest.fixture
def users() -> Iterator[UserServiceStubServer]:
    server = UserServiceStubServer().start()
    yield server
    server.stop()


@pytest.fixture
def users_client(users: UserServiceStubServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=users.url, timeout=5) as http:
        yield http


def _authorization(token: str, reference: str) -> bytes:
    body = {"reference": reference, "amount": 900, "currency": "EUR", "token": token}
    return json.dumps(body, separators=(",", ":")).encode()


def _authorize(
    sandbox_client: httpx.Client, token: str, reference: str, key: str
) -> httpx.Response:
    return sandbox_client.post(
        "/v1/authorizations",
        content=_authorization(token, reference),
        headers={"Idempotency-Key": key},
    )


def _script(sandbox_client: httpx.Client, *rules: dict[str, object]) -> httpx.Response:
    answer = sandbox_client.post("/v1/_sandbox/faults", json={"rules": list(rules)})
    assert answer.status_code == 200, answer.text
    return answer


def test_a_rule_answers_once_by_default_with_its_status_and_the_default_body(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    added = _script(sandbox_client, {"status": 502})
    assert added.json()["added"] == 1
    faulted = _authorize(sandbox_client, "tok_ok", "pay-1", "k1")
    normal = _authorize(sandbox_client, "tok_ok", "pay-1", "k1")
    assert (faulted.status_code, faulted.json()) == (502, {"error": "scripted"})
    assert faulted.headers["content-type"] == "application/json"
    assert normal.status_code == 201
    assert sandbox_client.get("/v1/_sandbox/faults").json() == {"rules": []}
    stats = sandbox_gateway.gateway.stats()
    assert (stats["faultsAnswered"], stats["authorizations"]) == (1, 1)


def test_without_effect_nothing_happens_and_a_retry_with_the_key_runs_normally(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    _script(
        sandbox_client, {"path": "/v1/authorizations", "status": 500, "body": {"error": "boom"}}
    )
    faulted = _authorize(sandbox_client, "tok_ok", "pay-2", "k2")
    assert (faulted.status_code, faulted.json()) == (500, {"error": "boom"})
    assert sandbox_gateway.gateway.records()["authorizations"] == []
    retried = _authorize(sandbox_client, "tok_ok", "pay-2", "k2")
    assert retried.status_code == 201
    assert sandbox_gateway.gateway.stats()["replays"] == 0  # it ran: it was no replay


def test_with_effect_the_request_takes_effect_and_a_retry_gets_the_normal_answer(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    sandbox_gateway.gateway.add_faults([FaultRule(status=504, effect=True, match_body="pay-3")])
    faulted = _authorize(sandbox_client, "tok_ok", "pay-3", "k3")
    assert (faulted.status_code, faulted.json()) == (504, {"error": "scripted"})
    (record,) = sandbox_gateway.gateway.records()["authorizations"]
    assert (record["reference"], record["status"], record["requestKey"]) == (
        "pay-3",
        "approved",
        "k3",
    )
    retried = _authorize(sandbox_client, "tok_ok", "pay-3", "k3")
    assert (retried.status_code, retried.json()) == (
        201,
        {"id": record["id"], "status": "approved"},
    )
    stats = sandbox_gateway.gateway.stats()
    assert (stats["authorizations"], stats["replays"]) == (1, 1)


def test_times_counts_matches_and_minus_one_lasts_until_cleared(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    _script(sandbox_client, {"status": 503, "times": 2, "path": "/v1/customers"})
    create = {"reference": "user-t"}
    statuses = [
        sandbox_client.post(
            "/v1/customers", json=create, headers={"Idempotency-Key": "t"}
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [503, 503, 201]

    _script(sandbox_client, {"status": 429, "times": -1})
    for index in range(5):
        assert _authorize(sandbox_client, "tok_ok", f"pay-t{index}", f"t{index}").status_code == 429
    listed = sandbox_client.get("/v1/_sandbox/faults").json()["rules"]
    assert [(rule["status"], rule["times"]) for rule in listed] == [(429, -1)]
    assert sandbox_client.delete("/v1/_sandbox/faults").json() == {"cleared": 1}
    assert _authorize(sandbox_client, "tok_ok", "pay-t0", "t0").status_code == 201
    assert sandbox_client.get("/v1/_sandbox/faults").json() == {"rules": []}


def test_the_first_matching_rule_with_times_left_answers(sandbox_client: httpx.Client) -> None:
    _script(
        sandbox_client,
        {"status": 500, "method": "GET"},  # never matches a POST
        {"status": 502, "path": "/payment-methods"},  # nor an authorization
        {"status": 503, "times": 2},
        {"status": 504},
    )
    statuses = [_authorize(sandbox_client, "tok_ok", "pay-f", "f").status_code for _ in range(4)]
    assert statuses == [503, 503, 504, 201]
    listed = sandbox_client.get("/v1/_sandbox/faults").json()["rules"]
    scripted = {"times": 1, "effect": False, "delaySeconds": 0, "body": {"error": "scripted"}}
    assert listed == [
        {"status": 500, "method": "GET", **scripted},
        {"status": 502, "path": "/payment-methods", **scripted},
    ]


def test_match_body_picks_one_request_among_concurrent_ones(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    sandbox_gateway.gateway.add_faults([FaultRule(status=500, match_body="tok_target", times=-1)])
    target = _authorize(sandbox_client, "tok_target", "pay-m1", "m1")
    other = _authorize(sandbox_client, "tok_other", "pay-m2", "m2")
    assert (target.status_code, other.status_code) == (500, 201)
    sandbox_gateway.gateway.clear_faults()
    assert _authorize(sandbox_client, "tok_target", "pay-m1", "m1").status_code == 201


def test_a_raw_body_and_extra_headers_are_sent_as_scripted(sandbox_client: httpx.Client) -> None:
    _script(
        sandbox_client,
        {"status": 503, "raw": "<html>busy</html>", "headers": {"Retry-After": "1"}},
        {"status": 200, "raw": "[]", "headers": {"Content-Type": "application/json"}},
    )
    html = _authorize(sandbox_client, "tok_ok", "pay-r", "r1")
    assert html.status_code == 503
    assert html.text == "<html>busy</html>"
    assert html.headers["content-type"].startswith("text/plain")
    assert html.headers["retry-after"] == "1"
    not_an_object = _authorize(sandbox_client, "tok_ok", "pay-r", "r2")
    assert (not_an_object.status_code, not_an_object.json()) == (200, [])
    assert not_an_object.headers["content-type"] == "application/json"


def test_a_delayed_scripted_answer_waits_on_a_timer(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    _script(sandbox_client, {"status": 500, "delaySeconds": 0.2})
    started = time.monotonic()
    faulted = _authorize(sandbox_client, "tok_ok", "pay-d", "d1")
    assert time.monotonic() - started >= 0.2
    assert faulted.status_code == 500
    assert sandbox_gateway.counters.max_waiting == 1


@pytest.fixture
def impatient_client(sandbox_gateway: SandboxGatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox_gateway.url, timeout=0.1) as http:
        yield http


def test_a_late_answer_with_effect_times_out_and_the_retry_gets_the_normal_answer(
    sandbox_gateway: SandboxGatewayServer,
    sandbox_client: httpx.Client,
    impatient_client: httpx.Client,
) -> None:
    # A gateway that charged and answers late: the client times out and retries; until
    # the answer was due the request is still in flight (409), then its stored answer.
    _script(sandbox_client, {"status": 504, "delaySeconds": 0.4, "effect": True})
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _authorize(impatient_client, "tok_ok", "pay-e", "e1")
    assert _authorize(sandbox_client, "tok_ok", "pay-e", "e1").status_code == 409
    time.sleep(max(0.0, 0.45 - (time.monotonic() - started)))
    retried = _authorize(sandbox_client, "tok_ok", "pay-e", "e1")
    (record,) = sandbox_gateway.gateway.records()["authorizations"]
    assert (retried.status_code, retried.json()) == (
        201,
        {"id": record["id"], "status": "approved"},
    )


def test_while_a_late_answer_with_effect_waits_its_key_is_in_flight(
    sandbox_gateway: SandboxGatewayServer, sandbox_client: httpx.Client
) -> None:
    _script(sandbox_client, {"status": 502, "delaySeconds": 0.3, "effect": True})
    body = _authorization("tok_ok", "pay-i")
    with socket.create_connection(("127.0.0.1", sandbox_gateway.port), timeout=5) as first:
        first.sendall(
            b"POST /v1/authorizations HTTP/1.1\r\nHost: x\r\nIdempotency-Key: i1\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 5
        while not sandbox_gateway.counters.waiting and time.monotonic() < deadline:
            time.sleep(0.005)
        concurrent = _authorize(sandbox_client, "tok_ok", "pay-i", "i1")
        answer = b""
        while chunk := first.recv(65536):
            answer += chunk
    assert concurrent.status_code == 409
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert _authorize(sandbox_client, "tok_ok", "pay-i", "i1").status_code == 201


def test_control_endpoints_are_never_faulted(sandbox_client: httpx.Client) -> None:
    _script(sandbox_client, {"status": 500, "times": -1})
    assert sandbox_client.get("/v1/_sandbox/stats").status_code == 200
    assert sandbox_client.get("/v1/_sandbox/records").status_code == 200
    assert sandbox_client.delete("/v1/_sandbox/faults").status_code == 200


@pytest.mark.parametrize(
    "rules",
    [
        [{"status": 99}],
        [{"status": 204}],
        [{"status": "500"}],
        [{"times": 0}],
        [{"times": True}],
        [{"delaySeconds": -1}],
        [{"headers": {"Content-Length": "3"}}],
        [{"headers": {"X-Bad": "a\r\nb"}}],
        [{"body": [1]}],
        [{"effect": "yes"}],
        [{"raw": "<html>", "body": {}}],
        [{"match_body": "x"}],  # the camelCase name is matchBody
        [{"status": 500}, "not a rule"],
        "not a list",
    ],
)
def test_a_bad_rule_is_refused_and_nothing_is_added(
    sandbox_client: httpx.Client, rules: object
) -> None:
    refused = sandbox_client.post("/v1/_sandbox/faults", json={"rules": rules})
    assert refused.status_code == 400
    assert refused.json()["error"]
    assert sandbox_client.get("/v1/_sandbox/faults").json() == {"rules": []}


def test_the_user_service_answers_scripted_failures_and_bad_profiles(
    users: UserServiceStubServer, users_client: httpx.Client
) -> None:
    _script(
        users_client,
        {"status": 400, "matchBody": "", "path": "/users/u-400/"},
        {"status": 401, "path": "/users/u-401/", "headers": {"WWW-Authenticate": "Bearer"}},
        {"status": 500, "path": "/users/u-500/"},
        {"status": 200, "path": "/users/u-null/", "body": {"name": "x", "email": None}},
        {"status": 200, "path": "/users/u-html/", "raw": "<html>"},
        {"status": 429, "path": "/users/u-429/", "headers": {"Retry-After": "2"}},
    )
    answers = {
        user: users_client.get(f"/v1/users/{user}/profile")
        for user in ("u-400", "u-401", "u-500", "u-null", "u-html", "u-429", "u-ok")
    }
    assert {user: a.status_code for user, a in answers.items()} == {
        "u-400": 400,
        "u-401": 401,
        "u-500": 500,
        "u-null": 200,
        "u-html": 200,
        "u-429": 429,
        "u-ok": 200,
    }
    assert answers["u-401"].headers["www-authenticate"] == "Bearer"
    assert answers["u-null"].json() == {"name": "x", "email": None}
    assert answers["u-html"].text == "<html>"
    assert answers["u-html"].headers["content-type"].startswith("text/plain")
    assert answers["u-429"].headers["retry-after"] == "2"
    assert answers["u-ok"].json()["email"] == "u-ok@profiles.example"
    stats = users_client.get("/v1/_sandbox/stats").json()
    assert (stats["calls"], stats["faultsAnswered"]) == (7, 6)


def test_the_user_service_faults_by_python_api_until_cleared(
    users: UserServiceStubServer, users_client: httpx.Client
) -> None:
    users.stub.add_faults([FaultRule(status=503, times=-1, delay_seconds=0.05, effect=True)])
    assert users_client.get("/v1/users/u-1/profile").status_code == 503
    assert users_client.get("/v1/users/u-1/profile").status_code == 503
    assert users_client.get("/v1/_sandbox/faults").json()["rules"][0]["times"] == -1
    users.stub.clear_faults()
    assert users_client.get("/v1/users/u-1/profile").status_code == 200
    assert users.stub.calls == 3
    assert users.counters.max_waiting == 1
