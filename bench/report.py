"""The benchmark's verdict: one table for people, the same figures as JSON for tools.

The targets are DESIGN.md §6. Memory "growth" is judged between half-way through the
throughput run and its end, after start-up allocations and caches have filled; a proof
over a million commands is ``--commands 1000000``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TARGET_COMMANDS_PER_SECOND = 10_000.0
TARGET_SHARE_OF_PASSTHROUGH = 0.5
TARGET_P99_MS = 250.0
# RSS may move this much between half-way and the end without counting as growth.
MEMORY_TOLERANCE = 0.10


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "MISS")


def judge(report: dict[str, Any]) -> dict[str, Any]:
    """Ratios and pass/miss against the targets; added to the report as ``targets``."""
    baselines = report["baselines"]
    throughput = report["worker"]["throughput"]
    latency = report["worker"]["latency"]
    worker_rate = float(throughput["commandsPerSecond"])
    halfway, end = throughput["rssHalfwayBytes"], throughput["rssEndBytes"]
    growth = _ratio(end - halfway, halfway) if halfway else None
    p99 = latency["p99Ms"]
    ratios = {
        "workerToRaw": _ratio(worker_rate, baselines["raw"]["commandsPerSecond"]),
        "workerToPassthrough": _ratio(worker_rate, baselines["passthrough"]["commandsPerSecond"]),
        "workerDbStageToDatabase": _ratio(
            throughput["dbStageCommandsPerSecond"], baselines["database"]["commandsPerSecond"]
        ),
    }
    share = ratios["workerToPassthrough"]
    return {
        "ratios": ratios,
        "targets": {
            "commandsPerSecond": {
                "target": f">= {TARGET_COMMANDS_PER_SECOND:,.0f} commands/s",
                "value": worker_rate,
                "verdict": _verdict(worker_rate >= TARGET_COMMANDS_PER_SECOND),
            },
            "shareOfPassthrough": {
                "target": f">= {TARGET_SHARE_OF_PASSTHROUGH}x the quixstreams pass-through",
                "value": share,
                "verdict": _verdict(
                    None if share is None else share >= TARGET_SHARE_OF_PASSTHROUGH
                ),
            },
            "p99AtHalfLoad": {
                "target": f"p99 <= {TARGET_P99_MS:.0f} ms at half the sustained rate",
                "value": p99,
                "verdict": _verdict(None if p99 is None else p99 <= TARGET_P99_MS),
            },
            "memory": {
                "target": f"no growth (RSS half-way -> end within {MEMORY_TOLERANCE:.0%})",
                "value": growth,
                "verdict": _verdict(None if growth is None else growth <= MEMORY_TOLERANCE),
            },
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


def render(report: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    baselines = report["baselines"]
    throughput = report["worker"]["throughput"]
    latency = report["worker"]["latency"]
    verdicts = report["targets"]
    ratios = report["ratios"]
    options = report["options"]
    host = report["machine"]
    raw, passthrough, database = baselines["raw"], baselines["passthrough"], baselines["database"]
    rows: list[tuple[str, str, str, str]] = [
        (
            "A raw confluent-kafka loop (EOS)",
            _rate(raw["commandsPerSecond"]),
            f"{raw['outputsPerCommand']:.2f} outputs/cmd",
            "",
        ),
        (
            "B quixstreams pass-through (EOS)",
            _rate(passthrough["commandsPerSecond"]),
            "1 output/cmd",
            "",
        ),
        (
            "C Postgres batched writes",
            _rate(database["commandsPerSecond"]),
            f"batch {database['batchSize']}, {database['commands']:,} cmds",
            "",
        ),
        (
            "worker sustained (EOS)",
            _rate(throughput["commandsPerSecond"]),
            f"{throughput['outputsPerCommand']:.2f} outputs/cmd",
            f"{verdicts['commandsPerSecond']['target']}: "
            f"{verdicts['commandsPerSecond']['verdict']}",
        ),
        ("  worker / A", _times(ratios["workerToRaw"]), "", ""),
        (
            "  worker / B",
            _times(ratios["workerToPassthrough"]),
            "",
            f">= 0.5x: {verdicts['shareOfPassthrough']['verdict']}",
        ),
        (
            "worker DB stage (checkpoint writes)",
            _rate(throughput["dbStageCommandsPerSecond"]),
            f"mean checkpoint {throughput['meanCheckpointCommands']} cmds",
            "",
        ),
        ("  worker DB stage / C", _times(ratios["workerDbStageToDatabase"]), "", ""),
        (
            f"latency at {latency['achievedRate']:,.0f} cmd/s",
            f"p50 {latency['p50Ms']} / p95 {latency['p95Ms']} / p99 {latency['p99Ms']} ms",
            f"{latency['measured']:,} cmds timed",
            f"p99 <= 250 ms: {verdicts['p99AtHalfLoad']['verdict']}",
        ),
        (
            "worker RSS ready / half-way / end",
            f"{_mib(throughput['rssReadyBytes'])} / {_mib(throughput['rssHalfwayBytes'])}"
            f" / {_mib(throughput['rssEndBytes'])}",
            f"peak {_mib(throughput['rssPeakBytes'])}",
            f"no growth: {verdicts['memory']['verdict']}",
        ),
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    header = ("measure", "figure", "detail", "target")
    widths = [max(width, len(title)) for width, title in zip(widths, header, strict=True)]

    def line(cells: tuple[str, str, str, str]) -> str:
        return " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    results = throughput["results"]
    incomplete = [
        name
        for name, part in (("A", raw), ("B", passthrough), ("worker", throughput))
        if not part["complete"]
    ]
    lines = [
        f"payment-worker benchmark: {options['commands']:,} commands, {options['users']:,} users,"
        f" {options['partitions']} partitions, commit interval {options['commitIntervalSeconds']} s"
        + (" (SMOKE: tiny sizes, figures mean nothing)" if options["smoke"] else ""),
        f"machine: {host['cores']} cores, {host['memoryGiB']} GiB, {host['cpuModel']},"
        f" Python {host['python']}, load average {host['loadAverage1m']} at start,"
        f" {report['loadAverage1mAtEnd']} at end; broker, Postgres and worker on this machine",
        line(header),
        "-+-".join("-" * width for width in widths),
        *(line(row) for row in rows),
        f"worker results: {results['statuses']}, missing {results['missing']},"
        f" duplicates {results['duplicates']}, dead letters {throughput['deadLetters']};"
        f" not accepted: {results['reasonsNotAccepted']}",
        f"domain replay ({report['workload']['domainReplayCommandsPerSecond']:,.0f} cmd/s"
        f" in one process, no I/O) of the first {options['dbCommands']:,} commands expects"
        f" {report['workload']['expectedStatuses']};"
        f" not accepted: {report['workload']['expectedReasonsNotAccepted']}",
    ]
    if incomplete:
        lines.append(f"INCOMPLETE (timed out; rate of what was seen): {', '.join(incomplete)}")
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
