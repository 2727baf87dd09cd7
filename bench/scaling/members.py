"""The workers of the group as the run sees them: each one's process, when it was started
and stopped, and its /metrics (assignment, rebalances, commands) sampled by a thread."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from bench.scaling.config import METRICS_POLL_SECONDS
from tests.support.harness import WorkerProcess
from tests.support.probes import http_get


@dataclass(frozen=True)
class WorkerSample:
    at: float
    assigned: int
    rebalances: int
    commands: int


def scrape_worker(port: int) -> WorkerSample | None:
    """Assignment, rebalances and processed commands from one worker's /metrics."""
    status, text = http_get(f"http://127.0.0.1:{port}/metrics", timeout=1)
    if status != 200:
        return None  # not serving yet, or gone
    values: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] += sample.value
    return WorkerSample(
        at=time.monotonic(),
        assigned=int(values["payment_worker_partitions_assigned"]),
        rebalances=int(values["payment_worker_rebalances_total"]),
        commands=int(values["payment_worker_commands_total"]),
    )


@dataclass
class Member:
    """One worker of the group, as this run sees it."""

    name: str
    process: WorkerProcess
    metrics_port: int
    started_at: float = 0.0
    stop_sent_at: float | None = None
    exited_at: float | None = None
    exit_code: int | None = None
    samples: list[WorkerSample] = field(default_factory=list)

    def latest(self) -> WorkerSample | None:
        return self.samples[-1] if self.samples else None

    def first_sample_at(self, predicate: Callable[[WorkerSample], bool]) -> float | None:
        return next((sample.at for sample in list(self.samples) if predicate(sample)), None)


class MetricsPoller(threading.Thread):
    def __init__(self, members: list[Member]) -> None:
        super().__init__(name="scaling-metrics", daemon=True)
        self._members = members
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(METRICS_POLL_SECONDS):
            for member in list(self._members):
                if member.process.is_running():
                    sample = scrape_worker(member.metrics_port)
                    if sample is not None:
                        member.samples.append(sample)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def has_partitions(sample: WorkerSample) -> bool:
    return sample.assigned > 0


def has_processed(sample: WorkerSample) -> bool:
    return sample.commands > 0
