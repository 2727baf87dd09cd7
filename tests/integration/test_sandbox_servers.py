"""The sandbox servers hold delayed answers without a thread each (sandbox/json_server.py).

No timing is asserted: that thousands of calls wait at once is read from the server's own
counters and the process's thread count, and a delayed call still gets its answer.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from sandbox.gateway_server import SandboxGatewayServer
from sandbox.json_server import raise_open_file_limit
from sandbox.user_service_server import UserServiceStubServer

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
        with httpx.Client(base_url=server.url) as client:
            body = {"token": "tok_decline_x", "reference": "pay-1"}
            first = client.post("/v1/authorizations", json=body, headers={"Idempotency-Key": "k"})
            again = client.post("/v1/authorizations", json=body, headers={"Idempotency-Key": "k"})
            other = client.post(
                "/v1/authorizations", json={"token": "tok"}, headers={"Idempotency-Key": "k"}
            )
            stats = client.get("/v1/_sandbox/stats").json()
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
        with httpx.Client(base_url=server.url) as client:
            profile = client.get("/v1/users/user-1/profile")
            unknown = client.get("/v1/users/unknown-1/profile")
            stats = client.get("/v1/_sandbox/stats").json()
        assert profile.status_code == 200
        assert profile.json()["email"] == "user-1@profiles.example"
        assert unknown.status_code == 404
        assert stats["calls"] == 2
        assert stats["maxAnswersWaiting"] >= 1
    finally:
        server.stop()
