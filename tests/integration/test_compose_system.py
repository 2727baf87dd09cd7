"""docker-compose.yml, run: the whole system comes up, works a command and is scraped.

``docker compose --profile worker up --wait`` starts Kafka, PostgreSQL, the migrations
and topics, the sandbox services, two workers, the projection and Prometheus. A command
sent through worker-1 gets its result; the event is on payment.events and in the
projection's view; both workers and the projection serve /metrics, one of the workers
counts the command, and Prometheus scrapes all three. ``down`` removes everything.

The compose files are compose's own ``COMPOSE_FILE`` (default ``docker-compose.yml``,
public images built or pulled as compose does). Where no registry answers, ``make
test-containers`` sets ``COMPOSE_FILE=docker-compose.yml:deploy/compose/local-images.yml``
(local images, the host's network). Reads go through ``docker compose exec``, so they work
with either. Marked ``docker``: deselected by default.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.harness import REPOSITORY
from tests.support.metrics_text import metric_sample

pytestmark = pytest.mark.docker

PROJECT = "payment-worker-test"
WORKERS = {"worker-1": 9108, "worker-2": 9109}
PROJECTION_PORT = 9110
PROMETHEUS = "http://127.0.0.1:9090"
ACCEPTED = ("payment_worker_commands_total", 'status="accepted",type="AddPaymentMethod"')


def _compose(*arguments: str, timeout: float = 120) -> str:
    completed = subprocess.run(
        ["docker", "compose", "--project-name", PROJECT, "--profile", "worker", *arguments],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"docker compose {' '.join(arguments)} failed ({completed.returncode}):\n"
            f"{completed.stdout[-3000:]}{completed.stderr[-3000:]}"
        )
    return completed.stdout


def _fetch(service: str, url: str) -> str:
    """GET ``url`` from inside ``service``'s container: the same on any network setup."""
    script = (
        f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
    )
    return _compose("exec", "-T", service, "python", "-c", script)


def _prometheus(path: str) -> Any:
    """Prometheus' API, published on the host's 127.0.0.1:9090 by both compose setups."""
    with urllib.request.urlopen(PROMETHEUS + path, timeout=5) as response:  # noqa: S310
        return json.load(response)


# What both compose setups take on the host's 127.0.0.1; scripts/stack takes two of them.
HOST_PORTS = {9092: "Kafka", 55432: "PostgreSQL", 9090: "Prometheus"}


def _in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def system() -> Iterator[None]:
    taken = {port: what for port, what in HOST_PORTS.items() if _in_use(port)}
    assert not taken, f"ports in use, needed by the compose system: {taken} (scripts/stack down?)"
    _compose("config", "--quiet")
    try:
        _compose("up", "--detach", "--wait", "--wait-timeout", "300", timeout=600)
        yield
    finally:
        logs = subprocess.run(
            ["docker", "compose", "--project-name", PROJECT, "--profile", "worker", "logs",
             "--no-color", "--tail", "40"],
            cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        print(logs.stdout[-6000:])
        _compose("down", "--volumes", "--timeout", "60", timeout=300)


def test_the_compose_system_works_a_command_and_every_pipeline_is_scraped(system: None) -> None:
    user = f"user-{uuid.uuid4().hex[:8]}"
    sent = _compose(
        "exec", "-T", "worker-1", "payment-worker", "send", "--wait", "60",
        "add-payment-method", "--user-id", user, "--gateway-token", "tok_visa_compose1",
        "--last4", "4242", "--exp-month", "12", "--exp-year", "2030",
        "--fingerprint", "fp_compose1", timeout=120,
    )  # fmt: skip
    acknowledgement, result = (json.loads(line) for line in sent.splitlines()[-2:])
    assert result["commandId"] == acknowledgement["sent"]
    assert (result["status"], result["reason"]) == ("accepted", "ok")

    tail = _compose(
        "exec", "-T", "worker-1", "payment-worker", "events", "tail", "--from-beginning",
        "--max", str(len(result["eventIds"])), "--timeout", "30",
    )  # fmt: skip
    events = [json.loads(line) for line in tail.splitlines() if line.startswith("{")]
    events = [event for event in events if event["key"] == user]
    assert {event["headers"]["eventId"] for event in events} == set(result["eventIds"])

    deadline = time.monotonic() + 60
    while True:
        view = json.loads(_compose("exec", "-T", "projection", "payment-worker", "view", user))
        if view["paymentMethods"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [method["paymentMethodId"] for method in view["paymentMethods"]] == [
        result["paymentMethodId"]
    ]

    counted = 0.0
    for service, port in WORKERS.items():
        metrics = _fetch(service, f"http://127.0.0.1:{port}/metrics")
        assert "payment_worker_build_info{" in metrics, service
        counted += metric_sample(metrics, *ACCEPTED)
    assert counted == 1.0, "the command is counted once, by the worker that took it"
    projection = _fetch("projection", f"http://127.0.0.1:{PROJECTION_PORT}/metrics")
    assert "payment_worker_build_info{" in projection

    deadline = time.monotonic() + 60
    while True:
        answer = _prometheus("/api/v1/targets?state=active")
        health = {
            target["labels"]["instance"]: target["health"]
            for target in answer["data"]["activeTargets"]
        }
        if set(health.values()) == {"up"} or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert health == {"worker-1": "up", "worker-2": "up", "projection": "up"}
    query = quote("sum(payment_worker_commands_total)")
    scraped = _prometheus(f"/api/v1/query?query={query}")
    assert scraped["status"] == "success"


def test_compose_accepts_the_users_file_alone_and_with_the_override() -> None:
    # The file users run, as they run it (public images), and the override CI runs on top.
    for files in (
        ["docker-compose.yml"],
        ["docker-compose.yml", "deploy/compose/local-images.yml"],
    ):
        options = [option for name in files for option in ("--file", name)]
        completed = subprocess.run(
            ["docker", "compose", *options, "--profile", "worker", "config", "--quiet"],
            cwd=REPOSITORY, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, f"{files}: {completed.stderr}"
