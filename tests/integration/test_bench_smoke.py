"""The benchmark tool works end to end: ``python -m bench --smoke`` on the running stack.

Only the tool is checked (it runs every measurement, reports every figure, and the
worker processed every command); its timings are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import REPOSITORY
from config.settings import Settings

SMOKE_TIMEOUT_SECONDS = 300


def _number(report: dict[str, Any], *path: str) -> float:
    value: Any = report
    for name in path:
        value = value[name]
    assert isinstance(value, int | float), f"{'.'.join(path)} is {value!r}"
    return float(value)


def test_smoke_run_reports_every_figure(stack_settings: Settings, tmp_path: Path) -> None:
    output = tmp_path / "benchmark.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "bench", "--smoke", "--output", str(output)],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=SMOKE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the tool stop its worker and drop its topics and schemas.
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError("the smoke run did not finish:\n" + stdout[-4000:]) from None
    assert process.returncode == 0, stdout[-4000:] + stderr[-4000:]
    assert "worker / B" in stdout  # the table was printed

    report = json.loads(output.read_text())
    commands = report["options"]["commands"]
    for baseline in ("raw", "passthrough", "database"):
        assert _number(report, "baselines", baseline, "commandsPerSecond") > 0
    assert report["baselines"]["raw"]["complete"]
    assert report["baselines"]["passthrough"]["complete"]

    throughput = report["worker"]["throughput"]
    assert _number(report, "worker", "throughput", "commandsPerSecond") > 0
    assert throughput["results"]["processedAll"]
    assert throughput["results"]["missing"] == 0
    assert throughput["results"]["duplicates"] == 0
    assert throughput["resultsSeen"] == commands
    # A realistic mix: nearly everything is accepted, nothing is dead-lettered.
    assert throughput["results"]["statuses"].get("accepted", 0) >= 0.9 * commands
    assert throughput["deadLetters"] == 0
    assert throughput["eventsSeen"] > 0
    for figure in ("rssReadyBytes", "rssHalfwayBytes", "rssEndBytes", "dbStageCommandsPerSecond"):
        assert _number(report, "worker", "throughput", figure) > 0

    latency = report["worker"]["latency"]
    assert latency["resultsSeen"] == latency["commands"]
    assert latency["measured"] > 0
    for figure in ("p50Ms", "p95Ms", "p99Ms", "achievedRate"):
        assert _number(report, "worker", "latency", figure) >= 0

    for ratio in ("workerToRaw", "workerToPassthrough", "workerDbStageToDatabase"):
        assert _number(report, "ratios", ratio) > 0
    for target in ("commandsPerSecond", "shareOfPassthrough", "p99AtHalfLoad", "memory"):
        assert report["targets"][target]["verdict"] in ("pass", "MISS")
    assert _number(report, "machine", "cores") >= 1
