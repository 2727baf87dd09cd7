"""The sizes and timings of a scaling run, and how often the run samples its workers.

One frozen value shared by the CLI, the run and the report, so the report can state the
configuration it measured.
"""

from __future__ import annotations

from dataclasses import dataclass

# How often each worker's /metrics is read, and how often the worker refreshes the
# assignment and lag gauges (librdkafka statistics) for this run.
METRICS_POLL_SECONDS = 0.25
STATISTICS_INTERVAL_MS = 500


@dataclass(frozen=True)
class ScalingConfig:
    # Commands per second, produced steadily for the whole run; one worker must keep up.
    rate: float = 100.0
    users: int = 2000
    partitions: int = 12
    # w1 first works off the backlog of its start-up (at most this long), then warms up.
    catch_up_timeout_seconds: float = 120.0
    warmup_seconds: float = 10.0
    phase_seconds: float = 30.0
    drain_timeout_seconds: float = 600.0  # a backlog after the load must clear by then
    keep: bool = False  # keep topics and schema afterwards, for inspection
    seed: int = 7
