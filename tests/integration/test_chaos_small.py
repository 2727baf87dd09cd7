"""The small chaos run: exactly-once under kills, a zombie, broker, database and User
Service restarts and gateway faults (late answers and in-flight 409s, 429s, 5xx, a
restart), checked against the model and the gateway's own records
(``python -m bench.chaos --small``).

It runs on a private stack of its own (another STACK_DIR and other ports than both the
shared stack and a `make chaos` run), so the shared stack is never restarted.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import REPOSITORY

# Neither the shared stack (9092/9093/55432) nor `make chaos` (19092/19093/55433).
KAFKA_PORT, KAFKA_CONTROLLER_PORT, PG_PORT = 19192, 19193, 55434
TIMEOUT_SECONDS = 600


# pytest's own timeout (300 s by default) must not cut the run before the tool's.
@pytest.mark.timeout(TIMEOUT_SECONDS + 60)
def test_small_chaos_run_keeps_every_guarantee(tmp_path: Path) -> None:
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--small",
            "--seed",
            "20261130",
            "--stack-dir",
            str(REPOSITORY / ".stack-chaos-test"),
            "--kafka-port",
            str(KAFKA_PORT),
            "--kafka-controller-port",
            str(KAFKA_CONTROLLER_PORT),
            "--pg-port",
            str(PG_PORT),
            "--log-dir",
            str(tmp_path),
        ],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    report = completed.stdout[-6000:] + completed.stderr[-3000:]
    # The verdict line and the exit status agree; the report says which check failed.
    assert "verdict: PASS" in completed.stdout, report
    assert completed.returncode == 0, report
