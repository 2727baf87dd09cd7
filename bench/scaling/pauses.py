"""Gaps in the arrival of visible results: the pauses a membership change causes.

A rebalance does not stop every partition at the same moment (each member revokes its
partitions at its next heartbeat, the others keep processing meanwhile), so a pause is
measured per partition as well as over all partitions together.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence

from bench.scaling.traffic import VisibleResult


def longest_gap(
    times: Sequence[float], start: float, end: float, *, from_last_before: bool = True
) -> tuple[float, float]:
    """The longest interval in [start, end] without an arrival, and when it began.

    ``times`` is sorted. With ``from_last_before`` the gap is counted from the last
    arrival before ``start`` (a pause that began just before a change is not cut short)
    up to ``end``; without, only gaps between arrivals inside the window count (a
    phase's own gaps, not the tail of the change before it). Returns ``(gap, began_at)``.
    """
    before = [t for t in times if t < start]
    inside = [t for t in times if start <= t <= end]
    if not from_last_before:
        points = inside or [start, end]
    else:
        points = ([before[-1]] if before else [start]) + inside + [end]
    best, began = 0.0, start
    for earlier, later in itertools.pairwise(points):
        if later - earlier > best:
            best, began = later - earlier, earlier
    return best, began


def times_by_partition(visible: Sequence[VisibleResult]) -> dict[int, list[float]]:
    """When each partition's results became visible, in order, by partition."""
    by_partition: dict[int, list[float]] = defaultdict(list)
    for result in visible:
        by_partition[result.partition].append(result.seen_at)
    return by_partition


def worst_partition_gap(
    by_partition: dict[int, list[float]], start: float, end: float, *, from_last_before: bool = True
) -> tuple[float, int | None, float]:
    """The longest gap of any one partition in [start, end]: (gap, partition, began_at)."""
    worst: tuple[float, int | None, float] = (0.0, None, start)
    for partition, times in sorted(by_partition.items()):
        gap, began = longest_gap(times, start, end, from_last_before=from_last_before)
        if gap > worst[0]:
            worst = (gap, partition, began)
    return worst
