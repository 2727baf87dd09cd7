"""Prometheus' own tool accepts the compose config and the alert rules of deploy/.

``promtool`` from the Prometheus image (``PAYMENT_WORKER_TEST_PROMETHEUS_IMAGE``, default
``prom/prometheus:v3.5.0``, the image docker-compose.yml runs) checks
``deploy/compose/prometheus.yml`` with the rule files it loads, and
``deploy/prometheus/alerts.yaml`` alone, as the Kubernetes deploy loads it. The unit tests
run the same checks only where promtool is installed. Marked ``docker``.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.harness import REPOSITORY

pytestmark = pytest.mark.docker

IMAGE = os.environ.get("PAYMENT_WORKER_TEST_PROMETHEUS_IMAGE", "prom/prometheus:v3.5.0")
MOUNTED = "/etc/prometheus/deploy"


@pytest.mark.parametrize(
    "check",
    [
        ["check", "config", f"{MOUNTED}/compose/prometheus.yml"],
        ["check", "rules", f"{MOUNTED}/prometheus/alerts.yaml"],
    ],
    ids=["compose-config", "alert-rules"],
)
def test_promtool_accepts_it(check: list[str]) -> None:
    completed = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "promtool",
         "--volume", f"{REPOSITORY / 'deploy'}:{MOUNTED}:ro", IMAGE, *check],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "SUCCESS" in completed.stdout
