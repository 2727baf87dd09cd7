"""The scaling report as text: two tables (phases, membership changes) and the verdict."""

from __future__ import annotations

from bench.scaling.report import ScalingReport


def _number(value: float | int | None, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def render(report: ScalingReport) -> str:
    """The report as two tables and the verdict (seconds throughout)."""
    lines = [
        f"scaling proof: {report.checks.commands} commands for {report.checks.users} users "
        f"at {report.config['rate']:g}/s, {report.config['partitions']} partitions; "
        f"worker logs in {report.names['logs']}",
        "",
        "phases — latency: produced → visible to read_committed, of the commands produced "
        "in the phase; gap: longest time without a new visible result, over all "
        "partitions / on the worst one; partitions per worker (its rebalance count) at "
        "the end of the phase",
        f"{'phase':<14}{'s':>6}{'produced':>9}{'visible/s':>10}{'p50':>7}{'p99':>7}"
        f"{'max':>7}{'gap':>7}{'gap p.':>8}  partitions (rebalances)",
    ]
    for phase in report.phases:
        spread = " ".join(
            f"{name}:{phase.assignment[name]}({phase.rebalances[name]})"
            for name in phase.assignment
        )
        lines.append(
            f"{phase.name:<14}{phase.seconds:>6.1f}{phase.produced:>9}"
            f"{phase.visible_per_second:>10.1f}{_number(phase.latency_p50):>7}"
            f"{_number(phase.latency_p99):>7}{_number(phase.latency_max):>7}"
            f"{phase.longest_gap:>7}{phase.longest_partition_gap:>8}  {spread}"
        )
    lines += [
        "",
        "membership changes — pause: the longest stall of one partition's visible results "
        "after the change (partition, began at +s); all p.: the same over all partitions; "
        "settled: every partition assigned among the live workers; assigned / 1st cmd: the "
        "new worker's first partition / command; exit: SIGTERM → process exit",
        f"{'change':<11}{'at':>7}{'pause':>7}{'(p)':>5}{'began':>7}{'all p.':>8}"
        f"{'max lat.':>9}{'settled':>9}{'assigned':>9}{'1st cmd':>8}{'exit':>6}{'code':>5}",
    ]
    for change in report.changes:
        lines.append(
            f"{change.change:<11}{change.at:>7}{change.pause:>7}"
            f"{_number(change.pause_partition):>5}{change.pause_began:>7}"
            f"{change.all_partitions_stall:>8}{_number(change.max_latency):>9}"
            f"{_number(change.settled_after):>9}{_number(change.assigned_after):>9}"
            f"{_number(change.first_command_after):>8}{_number(change.exit_after):>6}"
            f"{_number(change.exit_code):>5}"
        )
    checks = report.checks
    lines += [
        "",
        f"checks: {checks.results} results for {checks.commands} commands "
        f"({checks.accepted} accepted), {checks.events} events (model: "
        f"{checks.expected_events}), {checks.dead_letters} dead letters, "
        f"{checks.inbox_rows} inbox rows",
    ]
    lines += [f"note: {note}" for note in report.notes]
    if report.passed:
        lines.append(
            "verdict: PASS — nothing lost or duplicated, every command accepted, sequences "
            "gap-free, every worker left cleanly"
        )
    else:
        lines.append("verdict: FAIL")
        lines += [f"  - {violation}" for violation in report.violations]
    return "\n".join(lines)
