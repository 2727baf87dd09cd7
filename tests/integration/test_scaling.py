"""Scaling out and in under load keeps exactly-once: the scaling proof, in small.

One worker, then two and three in its consumer group, then two leave with SIGTERM, while
commands arrive steadily (``python -m bench.scaling``, run as a process: tests never
import ``bench``). Correctness is asserted on its JSON report; the pauses it measures are
printed, never asserted (timings on a shared machine are noise).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from tests.support.harness import REPOSITORY

PARTITIONS = 12
# Small enough for about a minute, and a rate one worker sustains on a busy machine.
OPTIONS = {
    "--rate": 40,
    "--users": 50,
    "--partitions": PARTITIONS,
    "--catch-up-timeout": 15,
    "--warmup-seconds": 2,
    "--phase-seconds": 4,
    "--drain-timeout": 60,
}
# The run takes about 75 s; past this it gets SIGTERM (and a minute to clean up), before
# pytest's own timeout would kill the test without it.
TIMEOUT_SECONDS = 240


def _run_scaling_proof(log_dir: Path, report_path: Path) -> tuple[int, str]:
    """``python -m bench.scaling`` with ``OPTIONS``: its exit code and its output."""
    options = [str(part) for option in OPTIONS.items() for part in option]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.scaling",
            *options,
            "--log-dir",
            str(log_dir),
            "--json",
            str(report_path),
        ],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the tool stop its workers and drop its topics and schema (its
        # workers also get SIGTERM should it die: tests.support.harness.exit_with_parent).
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError(
            f"the scaling proof did not finish in {TIMEOUT_SECONDS} s:\n"
            + stdout[-4000:]
            + stderr[-4000:]
        ) from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, stdout[-6000:] + stderr[-3000:]


@pytest.mark.timeout(TIMEOUT_SECONDS + 90)
def test_scaling_one_to_three_workers_and_back_loses_and_duplicates_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    report_path = tmp_path / "scaling.json"
    returncode, output = _run_scaling_proof(tmp_path, report_path)
    print(output)
    assert report_path.exists(), output
    report: dict[str, Any] = json.loads(report_path.read_text())

    # Nothing lost, nothing duplicated, in order, nothing dead-lettered, every worker
    # left with exit code 0, and each new worker got partitions (the full list of checks
    # is in bench.scaling's docstring). The verdict and the exit status agree.
    assert report["violations"] == [], output
    assert returncode == 0, output

    # Partitions moved back and forth without a pipeline restart: the key-state cache was
    # dropped when partitions were given up, so no checkpoint met a stale key.
    logs = sorted(tmp_path.glob("w*.log"))
    assert [log.name for log in logs] == ["w1.log", "w2.log", "w3.log"]
    for log in logs:
        assert "a dependency is unavailable" not in log.read_text(errors="replace"), log.name

    checks = report["checks"]
    assert checks["commands"] > 0
    assert checks["results"] == checks["accepted"] == checks["inbox_rows"] == checks["commands"]
    assert checks["events"] == checks["expected_events"]
    assert checks["dead_letters"] == 0

    # The group went 1 → 2 → 3 → 2 → 1 workers, each phase settled with every partition
    # assigned, and commands kept arriving through every phase and change.
    phases = report["phases"]
    assert [phase["workers"] for phase in phases] == [
        ["w1"],
        ["w1", "w2"],
        ["w1", "w2", "w3"],
        ["w2", "w3"],
        ["w3"],
    ]
    for phase in phases:
        assert sum(phase["assignment"].values()) == PARTITIONS, phase
        assert min(phase["assignment"].values()) > 0, phase
        assert phase["produced"] > 0, phase
    changes = report["changes"]
    assert [change["change"] for change in changes] == [
        "w2 joins",
        "w3 joins",
        "w1 leaves",
        "w2 leaves",
    ]
    assert all(change["settled_after"] is not None for change in changes)
    assert [change["exit_code"] for change in changes if change["exit_after"] is not None] == [
        0,
        0,
    ]
