"""The worker's image, run: a container of it works the stack's Kafka and PostgreSQL.

The container runs on the host's network, so it reaches the test's Kafka, PostgreSQL and
the sandbox services on loopback. A command sent with ``payment-worker send`` gets its
result and its events; ``/healthz`` and ``/readyz`` answer on the metrics port; SIGTERM
(``docker stop``) stops it cleanly within its shutdown bound.

Marked ``docker``: deselected by default, run by ``make test-containers`` (which builds the
image) or ``pytest -m docker``. The image is ``PAYMENT_WORKER_TEST_WORKER_IMAGE``
(default ``payment-worker:local``, what ``scripts/local-images worker`` or
``docker build -t payment-worker:local .`` makes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from config.settings import Settings
from tests.support.harness import REPOSITORY, free_port, read_topic, settings_environment
from tests.support.probes import http_get

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("PAYMENT_WORKER_TEST_WORKER_IMAGE", "payment-worker:local")
SHUTDOWN_BOUND_SECONDS = 20.0


def _docker(*arguments: str, environment: dict[str, str] | None = None) -> str:
    completed = subprocess.run(
        ["docker", *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(environment or {})},
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(f"docker {arguments[0]} failed: {completed.stderr.strip()}")
    return completed.stdout


def _wait_for(url: str, timeout: float, container: str) -> None:
    deadline = time.monotonic() + timeout
    while http_get(url, timeout=2)[0] != 200:
        if time.monotonic() > deadline:
            logs = _docker("logs", "--tail", "30", container)
            raise AssertionError(f"{url} did not answer 200 in {timeout:.0f} s; logs:\n{logs}")
        time.sleep(0.5)


@pytest.fixture
def image() -> str:
    try:
        _docker("image", "inspect", IMAGE)
    except (AssertionError, FileNotFoundError) as error:
        pytest.fail(f"no image {IMAGE} ({error}); build it with scripts/local-images worker")
    return IMAGE


def test_the_image_runs_the_worker_end_to_end_and_stops_on_sigterm(
    image: str, settings: Settings
) -> None:
    port = free_port()
    settings = settings.model_copy(
        update={
            "metrics_port": port,
            "metrics_host": "127.0.0.1",
            "shutdown_timeout_seconds": SHUTDOWN_BOUND_SECONDS,
        }
    )
    environment = settings_environment(settings)
    name = f"payment-worker-test-{uuid.uuid4().hex[:8]}"
    # `-e NAME` takes the value from docker's own environment: no secret on a command line.
    variables = [option for variable in environment for option in ("-e", variable)]
    _docker("run", "-d", "--name", name, "--network", "host", *variables, image,
            environment=environment)  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for(f"{base}/healthz", 60, name)
        _wait_for(f"{base}/readyz", 90, name)

        sent = subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "send", "--wait", "60",
             "add-payment-method", "--user-id", "user-image", "--gateway-token",
             "tok_visa_image01", "--last4", "4242", "--exp-month", "12", "--exp-year", "2030",
             "--fingerprint", "fp_image01"],
            cwd=REPOSITORY,
            env={**os.environ, **environment},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        acknowledgement, result = (json.loads(line) for line in sent.stdout.splitlines())
        assert result["commandId"] == acknowledgement["sent"]
        assert (result["status"], result["reason"]) == ("accepted", "ok")

        events = read_topic(settings, settings.topic_events, expected=len(result["eventIds"]))
        assert {event.headers["eventId"].decode() for event in events} == set(result["eventIds"])
        assert b"PaymentMethodAdded" in {event.headers["type"] for event in events}

        stopping = time.monotonic()
        _docker("stop", "--time", str(int(SHUTDOWN_BOUND_SECONDS) + 30), name)
        stopped_after = time.monotonic() - stopping
        state = json.loads(_docker("inspect", "--format", "{{json .State}}", name))
        assert state["ExitCode"] == 0, _docker("logs", "--tail", "30", name)
        assert stopped_after < SHUTDOWN_BOUND_SECONDS, f"stopped after {stopped_after:.1f} s"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_the_image_runs_as_its_non_root_user_and_cannot_install_packages(image: str) -> None:
    probe = "import importlib.util as u, os; print(os.getuid(), os.getgid(), u.find_spec('pip'))"
    output = _docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe
    )
    assert output.split() == ["10001", "10001", "None"]
