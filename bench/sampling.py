"""What a process did during a measurement: CPU per output, and the worker's gauges and RSS.

CPU time is the run time of every thread of the process
(``bench.procfs.process_cpu_seconds``), read when a poll of the output topic sees new
records, so that the window is the same as the throughput's: from the first visible output
to the last one (start-up, the group join and the final shutdown are left out). The
worker's ``/metrics`` is scraped every ``interval`` seconds from a thread of its own; each
scrape costs the worker well under a millisecond of CPU, counted in its CPU per command like
everything else it does.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.procfs import process_cpu_seconds, rss_bytes
from tests.support.metrics_text import metric_value
from tests.support.probes import http_get

IN_FLIGHT_GAUGE = "payment_worker_gateway_calls_in_flight"
# A window with fewer samples than this is judged on every sample of the run instead.
MIN_WINDOW_SAMPLES = 4


@dataclass(frozen=True, slots=True)
class CpuSample:
    at: float
    outputs: int
    cpu_seconds: float


class CpuWindow:
    """CPU seconds of ``pid`` at the first and the last poll that saw new outputs.

    ``observe`` is ``watch_outputs``' ``on_batch``. A run whose outputs all appeared in
    one poll (a tiny one) has no window: it is then measured from when this was made
    (the worker ready), over every output, and says so (``cpuWindow``: ``from-ready``).
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = CpuSample(time.monotonic(), 0, process_cpu_seconds(pid) or 0.0)
        self.first: CpuSample | None = None
        self.last: CpuSample | None = None
        self._outputs = 0

    def observe(self, now: float, outputs: int) -> None:
        if outputs == self._outputs:
            return
        cpu_seconds = process_cpu_seconds(self.pid)
        if cpu_seconds is None:
            # The process has exited (a baseline that ends after its last message): the
            # window ends at the last reading taken while it ran.
            return
        self._outputs = outputs
        sample = CpuSample(now, outputs, cpu_seconds)
        if self.first is None:
            self.first = sample
        self.last = sample

    def report(self) -> dict[str, Any]:
        """CPU µs per output over the window, the first visible batch excluded."""
        if self.first is None or self.last is None:
            return {
                "cpuMicrosecondsPerOutput": None,
                "cpuSeconds": None,
                "cpuOutputs": 0,
                "cpuCores": None,
                "cpuWindow": "none",
            }
        first, kind = self.first, "outputs"
        if self.last.outputs <= first.outputs:
            first, kind = self.start, "from-ready"
        outputs = self.last.outputs - first.outputs
        cpu = self.last.cpu_seconds - first.cpu_seconds
        seconds = self.last.at - first.at
        return {
            "cpuMicrosecondsPerOutput": round(cpu * 1e6 / outputs, 1),
            "cpuSeconds": round(cpu, 3),
            "cpuOutputs": outputs,
            # Cores kept busy on average over the window (1.0: one core all the time).
            "cpuCores": round(cpu / seconds, 2) if seconds > 0 else None,
            "cpuWindow": kind,
        }


@dataclass(frozen=True, slots=True)
class WorkerSample:
    at: float
    rss: int
    in_flight: float | None  # None: the worker does not export the gauge


@dataclass
class WorkerSampler:
    """Scrapes the worker's in-flight gauge and reads its RSS every ``interval`` seconds."""

    metrics_port: int
    pid: int
    interval: float = 0.25
    samples: list[WorkerSample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-sampler", daemon=True)

    def start(self) -> WorkerSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        while not self._stop.is_set():
            began = time.monotonic()
            status, text = http_get(url, timeout=2)
            in_flight = metric_value(text, IN_FLIGHT_GAUGE) if status == 200 else None
            self.samples.append(WorkerSample(began, rss_bytes(self.pid), in_flight))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def within(self, start: float | None, end: float | None) -> list[WorkerSample]:
        """The samples taken in the window; all of them if it holds too few (a tiny run)."""
        if start is None or end is None:
            return list(self.samples)
        inside = [sample for sample in self.samples if start <= sample.at <= end]
        return inside if len(inside) >= MIN_WINDOW_SAMPLES else list(self.samples)

    def in_flight(self, start: float | None, end: float | None) -> dict[str, Any]:
        """Gateway calls in flight over the window: max and mean of the scraped gauge."""
        values = [s.in_flight for s in self.within(start, end) if s.in_flight is not None]
        return {
            "max": max(values) if values else None,
            "mean": round(statistics.fmean(values), 1) if values else None,
            "samples": len(values),
            "gaugeExported": any(s.in_flight is not None for s in self.samples),
        }

    def rss(self, start: float | None, end: float | None) -> dict[str, int]:
        """RSS at the middle of the window and its peak over the whole run."""
        window = self.within(start, end)
        peak = max((s.rss for s in self.samples), default=0)
        if not window or start is None or end is None:
            return {"rssMiddleBytes": 0, "rssPeakBytes": peak}
        middle = (start + end) / 2
        closest = min(window, key=lambda s: abs(s.at - middle))
        return {"rssMiddleBytes": closest.rss, "rssPeakBytes": peak}
