"""The benchmark's verdict: one table for people, the same figures as JSON for tools.

The targets are DESIGN.md §6 (and the 10,000 commands/s of docs/performance.md). Memory "growth" is
judged between the middle of the throughput run's measured window and its end, after
start-up allocations and caches have filled; a proof over a million commands is
``--commands 1000000`` (or ``make bench-memory``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET_COMMANDS_PER_SECOND = 10_000.0
TARGET_SHARE_OF_PASSTHROUGH = 0.5
TARGET_SHARE_OF_RAW = 0.25
TARGET_SHARE_WITH_SLOW_GATEWAY = 0.5
TARGET_CPU_MICROSECONDS_PER_COMMAND = 100.0
TARGET_P99_MS = 250.0
TARGET_RSS_BYTES = 512 * 2**20
# RSS may move this much between the middle of the run and its end without counting as growth.
MEMORY_TOLERANCE = 0.10


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 4)


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "MISS")


def _target(text: str, value: float | None, passed: bool | None) -> dict[str, Any]:
    return {"target": text, "value": value, "verdict": _verdict(passed)}


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios and pass/miss against the targets; added to the report as ``ratios``/``targets``."""
    baselines = report["baselines"]
    worker = report["worker"]
    throughput = worker["throughput"]
    worker_rate = float(throughput["commandsPerSecond"])
    halfway, end = throughput["rssHalfwayBytes"], throughput["rssEndBytes"]
    growth = _ratio(end - halfway, halfway) if halfway else None
    p99 = worker["latency"]["p99Ms"]
    cpu = throughput["cpuMicrosecondsPerCommand"]
    raw_cpu = baselines["raw"]["cpuMicrosecondsPerMessage"]
    ratios = {
        "workerToRaw": _ratio(worker_rate, baselines["raw"]["commandsPerSecond"]),
        "workerToPassthrough": _ratio(worker_rate, baselines["passthrough"]["commandsPerSecond"]),
        "workerToDatabase": _ratio(worker_rate, baselines["database"]["commandsPerSecond"]),
        "delayedToUndelayed": _ratio(
            worker["gatewayDelayed"]["commandsPerSecond"],
            worker["gatewayUndelayed"]["commandsPerSecond"],
        ),
        "workerCpuToRawCpu": _ratio(cpu, raw_cpu),
        "workerDbStageToDatabase": _ratio(
            throughput["dbStageCommandsPerSecond"], baselines["database"]["commandsPerSecond"]
        ),
    }
    peak = throughput["rssPeakBytes"]
    slow = ratios["delayedToUndelayed"]
    delay = report["options"]["gatewayDelayMs"]
    return {
        "ratios": ratios,
        "targets": {
            "commandsPerSecond": _target(
                f">= {TARGET_COMMANDS_PER_SECOND:,.0f} commands/s",
                worker_rate,
                _at_least(worker_rate, TARGET_COMMANDS_PER_SECOND),
            ),
            "shareOfPassthrough": _target(
                f">= {TARGET_SHARE_OF_PASSTHROUGH}x the quixstreams pass-through",
                ratios["workerToPassthrough"],
                _at_least(ratios["workerToPassthrough"], TARGET_SHARE_OF_PASSTHROUGH),
            ),
            "shareOfRaw": _target(
                f">= {TARGET_SHARE_OF_RAW}x the raw confluent-kafka loop",
                ratios["workerToRaw"],
                _at_least(ratios["workerToRaw"], TARGET_SHARE_OF_RAW),
            ),
            "shareWithSlowGateway": _target(
                f">= {TARGET_SHARE_WITH_SLOW_GATEWAY}x with a {delay:g} ms gateway",
                slow,
                _at_least(slow, TARGET_SHARE_WITH_SLOW_GATEWAY),
            ),
            "cpuPerCommand": _target(
                f"<= {TARGET_CPU_MICROSECONDS_PER_COMMAND:.0f} us CPU per command",
                cpu,
                _at_most(cpu, TARGET_CPU_MICROSECONDS_PER_COMMAND),
            ),
            "p99AtHalfLoad": _target(
                f"p99 <= {TARGET_P99_MS:.0f} ms at half the sustained rate",
                p99,
                _at_most(p99, TARGET_P99_MS),
            ),
            "memory": _target(
                f"no growth (RSS middle -> end within {MEMORY_TOLERANCE:.0%})",
                growth,
                _at_most(growth, MEMORY_TOLERANCE),
            ),
            "rssPeak": _target(
                f"RSS peak < {TARGET_RSS_BYTES // 2**20} MiB",
                peak,
                None if not peak else peak < TARGET_RSS_BYTES,
            ),
        },
    }


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _rate(value: float) -> str:
    return f"{value:,.0f} cmd/s"


def _times(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.4f}x"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} us"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _in_flight(run: dict[str, Any]) -> str:
    flight = run["gatewayCallsInFlight"]
    if not flight["gaugeExported"]:
        return "gauge not exported"
    return f"max {_number(flight['max'], 0)} / mean {_number(flight['mean'])}"


def _verdict_cell(verdicts: dict[str, Any], name: str, short: str) -> str:
    return f"{short}: {verdicts[name]['verdict']}"


def _cut_short(run: dict[str, Any]) -> str:
    return "" if run["complete"] else f", cut at {_number(run['windowSeconds'])} s"


def _worker_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    worker = report["worker"]
    throughput, latency = worker["throughput"], worker["latency"]
    undelayed, delayed = worker["gatewayUndelayed"], worker["gatewayDelayed"]
    verdicts, ratios, options = report["targets"], report["ratios"], report["options"]
    delay = options["gatewayDelayMs"]
    gateway_detail = f"{options['gatewayUsers']:,} users x 4 cmds"

    def batches(run: dict[str, Any]) -> str:
        metrics = run["metrics"]
        if metrics.get("meanBatchMessages") is None:
            return "batch metrics not exported"
        return (
            f"mean batch {_number(metrics['meanBatchMessages'])} msgs,"
            f" {_number(metrics['meanBatchKeys'])} keys"
        )

    return [
        (
            "worker, realistic mix, 0 ms gateway",
            _rate(throughput["commandsPerSecond"]),
            f"{throughput['outputsPerCommand']:.2f} outputs/cmd{_cut_short(throughput)}",
            _verdict_cell(verdicts, "commandsPerSecond", ">= 10,000 cmd/s"),
        ),
        (
            "  worker / A",
            _times(ratios["workerToRaw"]),
            "",
            _verdict_cell(verdicts, "shareOfRaw", ">= 0.25x"),
        ),
        (
            "  worker / B",
            _times(ratios["workerToPassthrough"]),
            "",
            _verdict_cell(verdicts, "shareOfPassthrough", ">= 0.5x"),
        ),
        ("  worker / C", _times(ratios["workerToDatabase"]), "", ""),
        (
            "  worker CPU per command",
            _us(throughput["cpuMicrosecondsPerCommand"]),
            f"{_number(throughput['cpuCores'], 2)} cores busy;"
            f" A: {_us(report['baselines']['raw']['cpuMicrosecondsPerMessage'])}/msg"
            f" ({_times(ratios['workerCpuToRawCpu'])})",
            _verdict_cell(verdicts, "cpuPerCommand", "<= 100 us"),
        ),
        ("  gateway calls in flight", _in_flight(throughput), batches(throughput), ""),
        (
            "  worker DB stage (checkpoint writes)",
            _rate(throughput["dbStageCommandsPerSecond"]),
            f"mean checkpoint {throughput['meanCheckpointCommands']} cmds",
            f"/ C: {_times(ratios['workerDbStageToDatabase'])}",
        ),
        (
            "worker, gateway-bound, 0 ms gateway",
            _rate(undelayed["commandsPerSecond"]),
            f"{gateway_detail}, {_us(undelayed['cpuMicrosecondsPerCommand'])}/cmd"
            f"{_cut_short(undelayed)}",
            "",
        ),
        ("  gateway calls in flight", _in_flight(undelayed), batches(undelayed), ""),
        (
            f"worker, gateway-bound, {delay:g} ms gateway",
            _rate(delayed["commandsPerSecond"]),
            f"{gateway_detail}, {_us(delayed['cpuMicrosecondsPerCommand'])}/cmd"
            f"{_cut_short(delayed)}",
            "",
        ),
        (
            "  gateway calls in flight",
            _in_flight(delayed),
            f"mean call {_number(delayed['metrics'].get('meanGatewayCallMs'))} ms as seen",
            "",
        ),
        (
            f"  worker@{delay:g}ms / worker@0ms",
            _times(ratios["delayedToUndelayed"]),
            "",
            _verdict_cell(verdicts, "shareWithSlowGateway", ">= 0.5x"),
        ),
        (
            f"latency at {latency['achievedRate']:,.0f} cmd/s (half load)",
            f"p50 {latency['p50Ms']} / p95 {latency['p95Ms']} / p99 {latency['p99Ms']} ms",
            f"{latency['measured']:,} cmds timed",
            _verdict_cell(verdicts, "p99AtHalfLoad", "p99 <= 250 ms"),
        ),
        (
            "worker RSS started / middle / end",
            f"{_mib(throughput['rssReadyBytes'])} / {_mib(throughput['rssHalfwayBytes'])}"
            f" / {_mib(throughput['rssEndBytes'])}",
            f"peak {_mib(throughput['rssPeakBytes'])} (mix run)",
            f"no growth: {verdicts['memory']['verdict']}, "
            + _verdict_cell(verdicts, "rssPeak", "< 512 MiB"),
        ),
    ]


def _sandbox_row(report: dict[str, Any]) -> tuple[str, str, str, str]:
    runs = report["worker"]
    gateway = runs["throughput"]["sandbox"]["gateway"]
    users = runs["throughput"]["sandbox"]["userService"]
    slow = runs["gatewayDelayed"]["sandbox"]["gateway"]
    return (
        "sandbox CPU per request (mix run)",
        f"gateway {_us(gateway['cpuMicrosecondsPerRequest'])}"
        f" / User Service {_us(users['cpuMicrosecondsPerRequest'])}",
        f"{gateway['requests']:,} / {users['requests']:,} requests;"
        f" delayed gateway {_us(slow['cpuMicrosecondsPerRequest'])}",
        "",
    )


def render(report: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    baselines = report["baselines"]
    throughput = report["worker"]["throughput"]
    options = report["options"]
    host = report["machine"]
    raw, passthrough, database = baselines["raw"], baselines["passthrough"], baselines["database"]
    rows: list[tuple[str, str, str, str]] = [
        (
            "A raw confluent-kafka loop (EOS)",
            _rate(raw["commandsPerSecond"]),
            f"{raw['outputsPerCommand']:.2f} outputs/cmd,"
            f" CPU {_us(raw['cpuMicrosecondsPerMessage'])}/msg",
            "",
        ),
        (
            "B quixstreams pass-through (EOS)",
            _rate(passthrough["commandsPerSecond"]),
            f"1 output/cmd, CPU {_us(passthrough['cpuMicrosecondsPerMessage'])}/msg",
            "",
        ),
        (
            "C PostgreSQL bulk writes (the limit)",
            _rate(database["commandsPerSecond"]),
            f"{database['batchSize']:,} cmds a transaction, {database['commands']:,} cmds",
            "",
        ),
        *_worker_rows(report),
        _sandbox_row(report),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    header = ("measure", "figure", "detail", "target")
    widths = [max(width, len(title)) for width, title in zip(widths, header, strict=True)]

    def line(cells: tuple[str, str, str, str]) -> str:
        text = " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return text.rstrip()

    results = throughput["results"]
    runs = report["worker"]
    incomplete = [
        name
        for name, part in (
            ("A", raw),
            ("B", passthrough),
            ("worker mix", throughput),
            ("worker gateway-bound 0 ms", runs["gatewayUndelayed"]),
            ("worker gateway-bound delayed", runs["gatewayDelayed"]),
        )
        if not part["complete"]
    ]
    lines = [
        f"payment-worker benchmark: {options['commands']:,} commands, {options['users']:,} users,"
        f" {options['partitions']} partitions,"
        f" commit interval {options['commitIntervalSeconds']} s,"
        f" gateway_max_in_flight {options['gatewayMaxInFlight']}"
        + (" (SMOKE: tiny sizes, figures mean nothing)" if options["smoke"] else ""),
        f"machine: {host['cores']} cores, {host['memoryGiB']} GiB, {host['cpuModel']},"
        f" Python {host['python']}, load average {host['loadAverage1m']} at start,"
        f" {report['loadAverage1mAtEnd']} at end; broker, Postgres and worker on this machine",
        line(header),
        "-+-".join("-" * width for width in widths),
        *(line(row) for row in rows),
        f"worker results (mix): {results['statuses']}, missing {results['missing']},"
        f" duplicates {results['duplicates']}, dead letters {throughput['deadLetters']};"
        f" not accepted: {results['reasonsNotAccepted']}",
        f"worker results (gateway-bound): 0 ms {runs['gatewayUndelayed']['results']['statuses']},"
        f" delayed {runs['gatewayDelayed']['results']['statuses']}",
        f"domain replay ({report['workload']['domainReplayCommandsPerSecond']:,.0f} cmd/s"
        f" in one process, no I/O) of the first {options['dbCommands']:,} commands expects"
        f" {report['workload']['expectedStatuses']};"
        f" not accepted: {report['workload']['expectedReasonsNotAccepted']}",
    ]
    if incomplete:
        lines.append(
            "CUT SHORT (window or timeout reached; the rate is of what was seen): "
            + ", ".join(incomplete)
        )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
