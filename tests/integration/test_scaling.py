"""Scaling out and in under load keeps exactly-once: the scaling proof, in small.

One worker, then two and three in its consumer group, then two leave with SIGTERM, while
commands arrive steadily (``bench.scaling``). Correctness is asserted; the pauses it
measures are printed, never asserted (timings on a shared machine are noise).
"""

from __future__ import annotations

from pathlib import Path

from bench.scaling import ScalingConfig, render, run_scaling
from config.settings import Settings

# Small enough for about a minute, and a rate one worker sustains on a busy machine.
CONFIG = ScalingConfig(
    rate=40,
    users=50,
    partitions=12,
    catch_up_timeout_seconds=15,
    warmup_seconds=2,
    phase_seconds=4,
    drain_timeout_seconds=60,
)


def test_scaling_one_to_three_workers_and_back_loses_and_duplicates_nothing(
    stack_settings: Settings, tmp_path: Path
) -> None:
    report = run_scaling(stack_settings, CONFIG, tmp_path)
    print(render(report))

    # Nothing lost, nothing duplicated, in order, nothing dead-lettered, every worker
    # left with exit code 0, and each new worker got partitions (the full list of checks
    # is in bench.scaling's docstring).
    assert report.violations == [], render(report)

    # Partitions moved back and forth without a pipeline restart: the key-state cache was
    # dropped when partitions were given up, so no checkpoint met a stale key.
    for log in sorted(tmp_path.glob("w*.log")):
        assert "a dependency is unavailable" not in log.read_text(errors="replace"), log.name

    checks = report.checks
    assert checks.commands > 0
    assert checks.results == checks.accepted == checks.inbox_rows == checks.commands
    assert checks.events == checks.expected_events
    assert checks.dead_letters == 0

    # The group went 1 → 2 → 3 → 2 → 1 workers, each phase settled with every partition
    # assigned, and commands kept arriving through every phase and change.
    assert [phase.workers for phase in report.phases] == [
        ["w1"],
        ["w1", "w2"],
        ["w1", "w2", "w3"],
        ["w2", "w3"],
        ["w3"],
    ]
    for phase in report.phases:
        assert sum(phase.assignment.values()) == CONFIG.partitions, phase
        assert min(phase.assignment.values()) > 0, phase
        assert phase.produced > 0, phase
    assert [change.change for change in report.changes] == [
        "w2 joins",
        "w3 joins",
        "w1 leaves",
        "w2 leaves",
    ]
    assert all(change.settled_after is not None for change in report.changes)
    assert [change.exit_code for change in report.changes if change.exit_after is not None] == [
        0,
        0,
    ]
