"""What the report says of each phase and each membership change, measured from the
run's timeline, what the producer sent and when each result became visible.

Definitions (pause, all p., max latency, settled, assigned, 1st cmd, exit) are in the
docstring of ``bench.scaling``.
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.scaling.members import has_partitions, has_processed
from bench.scaling.pauses import longest_gap, times_by_partition, worst_partition_gap
from bench.scaling.report import ChangeReport, PhaseReport
from bench.scaling.timeline import Timeline
from bench.scaling.traffic import LoadProducer, VisibleResult


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def first_visible(visible: Sequence[VisibleResult]) -> dict[str, float]:
    """When each command's result was first seen."""
    seen: dict[str, float] = {}
    for result in visible:
        seen.setdefault(result.command_id, result.seen_at)
    return seen


def latencies(
    producer: LoadProducer, start: float, end: float, seen: dict[str, float]
) -> tuple[list[float], int]:
    """Produce → visible of the commands produced in [start, end), and how many of them
    never became visible."""
    found: list[float] = []
    unseen = 0
    for command_id, produced_at in producer.produced_between(start, end):
        if command_id in seen:
            found.append(seen[command_id] - produced_at)
        else:
            unseen += 1
    return found, unseen


def phase_reports(
    timeline: Timeline, producer: LoadProducer, visible: Sequence[VisibleResult]
) -> list[PhaseReport]:
    seen = first_visible(visible)
    times = [r.seen_at for r in visible]
    by_partition = times_by_partition(visible)
    phases: list[PhaseReport] = []
    for index, (name, start) in enumerate(timeline.phase_marks):
        # A phase is the settled group: from when the partitions were spread until
        # the next change; what happens in between belongs to the change.
        end = timeline.window_end(start)
        phase_latencies, unseen = latencies(producer, start, end, seen)
        count = sum(1 for t in times if start <= t < end)
        assignment, rebalances = timeline.phase_ends[index]
        phases.append(
            PhaseReport(
                name=name,
                workers=name.split(": ", 1)[1].split(),
                started_at=round(start - timeline.origin, 2),
                seconds=round(end - start, 2),
                produced=len(phase_latencies) + unseen,
                visible=count,
                visible_per_second=round(count / (end - start), 1),
                latency_p50=_rounded(percentile(phase_latencies, 0.5)),
                latency_p99=_rounded(percentile(phase_latencies, 0.99)),
                latency_max=_rounded(max(phase_latencies, default=None)),
                unseen=unseen,
                longest_gap=round(longest_gap(times, start, end, from_last_before=False)[0], 3),
                longest_partition_gap=round(
                    worst_partition_gap(by_partition, start, end, from_last_before=False)[0],
                    3,
                ),
                assignment=assignment,
                rebalances=rebalances,
            )
        )
    return phases


def change_reports(
    timeline: Timeline, producer: LoadProducer, visible: Sequence[VisibleResult]
) -> list[ChangeReport]:
    seen = first_visible(visible)
    times = [r.seen_at for r in visible]
    by_partition = times_by_partition(visible)
    reports: list[ChangeReport] = []
    for change in timeline.changes:
        at, member = change.at, change.member
        end = timeline.window_end(at)
        pause, partition, began = worst_partition_gap(by_partition, at, end)
        change_latencies, _ = latencies(producer, at, end, seen)
        joined = change.is_join
        reports.append(
            ChangeReport(
                change=change.name,
                at=round(at - timeline.origin, 2),
                pause=round(pause, 3),
                pause_partition=partition,
                pause_began=round(began - at, 2),
                all_partitions_stall=round(longest_gap(times, at, end)[0], 3),
                max_latency=_rounded(max(change_latencies, default=None)),
                settled_after=_since(change.settled_at, at),
                assigned_after=_since(member.first_sample_at(has_partitions), at)
                if joined
                else None,
                first_command_after=_since(member.first_sample_at(has_processed), at)
                if joined
                else None,
                exit_after=None if joined else _since(member.exited_at, at),
                exit_code=None if joined else member.exit_code,
            )
        )
    return reports


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _since(moment: float | None, origin: float) -> float | None:
    return None if moment is None else round(moment - origin, 2)
