"""The benchmark tool works end to end: ``python -m bench --smoke`` on the running stack.

Only the tool is checked (it runs every measurement, reports every figure, including the
worker's CPU per command, the gateway calls in flight and a run with a 100 ms gateway,
and the worker processed every command); its timings are never asserted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from config.settings import Settings
from tests.support.harness import run_tool

SMOKE_TIMEOUT_SECONDS = 300


def _number(report: dict[str, Any], *path: str) -> float:
    value: Any = report
    for name in path:
        value = value[name]
    assert isinstance(value, int | float), f"{'.'.join(path)} is {value!r}"
    return float(value)


def _run_smoke(output: Path) -> str:
    run = run_tool("bench", ["--smoke", "--output", str(output)], SMOKE_TIMEOUT_SECONDS)
    assert run.returncode == 0, run.tail()
    return run.stdout


def _check_worker_run(run: dict[str, Any], name: str) -> None:
    """One worker throughput run: every command answered once, and every figure there."""
    assert run["complete"], name
    assert run["results"]["processedAll"], name
    assert run["results"]["missing"] == 0, name
    assert run["results"]["duplicates"] == 0, name
    assert run["resultsSeen"] == run["commands"], name
    assert run["deadLetters"] == 0, name
    assert run["eventsSeen"] > 0, name
    assert _number(run, "commandsPerSecond") > 0, name
    assert _number(run, "cpuMicrosecondsPerCommand") >= 0, name
    flight = run["gatewayCallsInFlight"]
    # The gauge is scraped from the worker's /metrics during the run.
    assert flight["gaugeExported"], name
    assert flight["samples"] > 0, name
    assert _number(flight, "max") >= _number(flight, "mean") >= 0, name
    for figure in ("rssReadyBytes", "rssHalfwayBytes", "rssEndBytes", "rssPeakBytes"):
        assert _number(run, figure) > 0, f"{name}: {figure}"
    for service in ("gateway", "userService"):
        assert run["sandbox"][service]["requests"] >= 0, f"{name}: {service}"
    assert run["exitCode"] == 0, name


def test_smoke_run_reports_every_figure(stack_settings: Settings, tmp_path: Path) -> None:
    output = tmp_path / "benchmark.json"
    stdout = _run_smoke(output)
    for row in ("worker / A", "worker / B", "worker@100ms / worker@0ms", "CPU per command"):
        assert row in stdout  # the table was printed

    report = json.loads(output.read_text())
    commands = report["options"]["commands"]
    for baseline in ("raw", "passthrough", "database"):
        assert _number(report, "baselines", baseline, "commandsPerSecond") > 0
    assert report["baselines"]["raw"]["complete"]
    assert report["baselines"]["passthrough"]["complete"]
    assert _number(report, "baselines", "raw", "cpuMicrosecondsPerMessage") >= 0
    # The database baseline writes in bulk, not at the worker's checkpoint size.
    assert report["baselines"]["database"]["batchSize"] == report["options"]["dbBatch"]

    worker = report["worker"]
    throughput = worker["throughput"]
    _check_worker_run(throughput, "mix")
    assert throughput["commands"] == commands
    # A realistic mix: nearly everything is accepted, nothing is dead-lettered.
    assert throughput["results"]["statuses"].get("accepted", 0) >= 0.9 * commands
    assert _number(throughput, "dbStageCommandsPerSecond") > 0
    assert throughput["sandbox"]["gateway"]["requests"] > 0

    # The gateway-bound workload, with the sandbox answering at once and after 100 ms.
    users = report["options"]["gatewayUsers"]
    assert report["options"]["gatewayDelayMs"] == 100
    for name in ("gatewayUndelayed", "gatewayDelayed"):
        run = worker[name]
        _check_worker_run(run, name)
        assert run["commands"] == 4 * users
        assert run["results"]["statuses"] == {"accepted": 4 * users}, name
        assert run["sandbox"]["gateway"]["requests"] >= 3 * users, name
    # The slow sandbox held its answers back (the worker's view of it is reported, too).
    assert worker["gatewayDelayed"]["sandbox"]["gateway"]["maxAnswersWaitingSinceStart"] >= 1
    assert _number(worker, "gatewayDelayed", "metrics", "meanGatewayCallMs") > 0

    latency = worker["latency"]
    assert latency["resultsSeen"] == latency["commands"]
    assert latency["measured"] > 0
    for figure in ("p50Ms", "p95Ms", "p99Ms", "achievedRate"):
        assert _number(latency, figure) >= 0

    for ratio in (
        "workerToRaw",
        "workerToPassthrough",
        "workerToDatabase",
        "delayedToUndelayed",
        "workerCpuToRawCpu",
        "workerDbStageToDatabase",
    ):
        assert _number(report, "ratios", ratio) >= 0, ratio
    for target in report["targets"].values():
        assert target["verdict"] in ("pass", "MISS")
    assert set(report["targets"]) >= {
        "commandsPerSecond",
        "shareOfPassthrough",
        "shareOfRaw",
        "shareWithSlowGateway",
        "cpuPerCommand",
        "p99AtHalfLoad",
        "memory",
        "rssPeak",
    }
    assert _number(report, "machine", "cores") >= 1
