"""Scaling out and in under load keeps exactly-once: the scaling proof, in small.

One worker, then two and three in its consumer group, then two leave with SIGTERM, while
commands arrive steadily (``python -m bench.scaling``, run as a process: tests never
import ``bench``). Correctness is asserted on its JSON report; the pauses it measures are
printed, never asserted (timings on a shared machine are noise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from tests.support.harness import run_tool

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


@pytest.mark.timeout(TIMEOUT_SECONDS + 90)
def test_scaling_one_to_three_workers_and_back_loses_and_duplicates_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    report_path = tmp_path / "scaling.json"
    options = [str(part) for option in OPTIONS.items() for part in option]
    run = run_tool(
        "bench.scaling",
        [*options, "--log-dir", str(tmp_path), "--json", str(report_path)],
        TIMEOUT_SECONDS,
    )
    returncode, output = run.returncode, run.tail()
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
