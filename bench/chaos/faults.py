"""Faults injected while commands flow, one at a time, each logged with its time.

A schedule is a list of (seconds after the start, fault); the injector runs it in a
thread and, between faults, restarts any worker that exited without being killed (and
logs that: it counts against the run).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bench.chaos.environment import PrivateStack, UserService, WorkerPool


@dataclass(frozen=True)
class FaultRecord:
    elapsed: float
    wall: datetime
    what: str


@dataclass
class FaultLog:
    started: float = field(default_factory=time.monotonic)
    records: list[FaultRecord] = field(default_factory=list)
    echo: bool = True
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str) -> None:
        record = FaultRecord(time.monotonic() - self.started, datetime.now().astimezone(), what)
        with self._lock:
            self.records.append(record)
        if self.echo:
            print(f"  {format_record(record)}", flush=True)


def format_record(record: FaultRecord) -> str:
    return f"+{record.elapsed:7.1f}s  {record.wall:%H:%M:%S}  {record.what}"


Fault = Callable[["FaultInjector"], None]


@dataclass(frozen=True)
class FaultTiming:
    """How long the faults last; the pause must outlast the session timeout."""

    pause_seconds: float
    outage_seconds: float


class FaultInjector:
    def __init__(
        self,
        pool: WorkerPool,
        stack: PrivateStack,
        user_service: UserService,
        log: FaultLog,
        *,
        rng: random.Random,
        timing: FaultTiming,
    ) -> None:
        self.pool = pool
        self.stack = stack
        self.user_service = user_service
        self.log = log
        self.rng = rng
        self.timing = timing
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.counts: dict[str, int] = {}

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # --- the faults -------------------------------------------------------------------

    def kill_worker(self) -> None:
        slots = self.pool.running_slots()
        if not slots:
            self.log.add("kill worker: none running, skipped")
            return
        slot = self.rng.choice(slots)
        pid = self.pool.kill(slot)
        self.log.add(f"SIGKILL worker-{slot} (pid {pid})")
        self._sleep(self.rng.uniform(0.5, 3.0))
        pid = self.pool.restart(slot)
        self.log.add(f"worker-{slot} restarted (pid {pid})")
        self._count("worker SIGKILL + restart")

    def pause_worker(self) -> None:
        slots = self.pool.running_slots()
        if not slots:
            self.log.add("pause worker: none running, skipped")
            return
        slot = self.rng.choice(slots)
        pid = self.pool.pause(slot)
        self.log.add(f"SIGSTOP worker-{slot} (pid {pid}) for {self.timing.pause_seconds:.0f}s")
        self._sleep(self.timing.pause_seconds)
        self.pool.resume(slot)
        self.log.add(f"SIGCONT worker-{slot} (pid {pid}): a zombie that must be fenced")
        self._count("worker SIGSTOP/SIGCONT (zombie)")

    def restart_broker(self, kill: bool = False) -> None:
        how = "SIGKILL" if kill else "SIGTERM"
        self.log.add(f"Kafka broker restart ({how}) begins")
        self.stack.run("restart", "kafka", *(["--kill"] if kill else []))
        self.log.add("Kafka broker back")
        self._count("Kafka broker restart")

    def restart_postgres(self) -> None:
        self.log.add("PostgreSQL restart (pg_ctl -m immediate) begins")
        self.stack.run("restart", "postgres", "--immediate")
        self.log.add("PostgreSQL back")
        self._count("PostgreSQL immediate restart")

    def user_service_outage(self) -> None:
        self.user_service.stop()
        self.log.add(f"User Service down for {self.timing.outage_seconds:.0f}s")
        self._sleep(self.timing.outage_seconds)
        self.user_service.start()
        self.log.add("User Service up")
        self._count("User Service outage")

    # --- running a schedule -----------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        # Faults that are under way finish (a paused worker is resumed) even when stopping.
        time.sleep(seconds)

    def watch_workers(self) -> None:
        for slot, code in self.pool.restart_exited():
            self.log.add(f"worker-{slot} EXITED BY ITSELF (exit code {code}); restarted")

    def run(self, schedule: list[tuple[float, Fault]]) -> None:
        try:
            for at, fault in sorted(schedule, key=lambda item: item[0]):
                while time.monotonic() - self.log.started < at:
                    if self.stopping.wait(0.5):
                        return
                    self.watch_workers()
                fault(self)
                self.watch_workers()
        except BaseException as error:  # reported by the run; the thread must not die silently
            self.error = error
            self.log.add(f"fault injection failed: {error}")

    def start(self, schedule: list[tuple[float, Fault]]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(schedule,), daemon=True)
        thread.start()
        return thread


def build_schedule(
    duration: float, *, small: bool, rng: random.Random
) -> list[tuple[float, Fault]]:
    """Faults spread over ``duration`` seconds of traffic."""
    schedule: list[tuple[float, Fault]] = [
        (duration * 0.12, FaultInjector.user_service_outage),
        (duration * 0.25, FaultInjector.pause_worker),
        (duration * 0.50, lambda f: f.restart_broker()),
        (duration * 0.72, FaultInjector.restart_postgres),
    ]
    kills = [duration * 0.05, duration * 0.88]
    if not small:
        schedule += [
            (duration * 0.40, FaultInjector.user_service_outage),
            (duration * 0.60, FaultInjector.pause_worker),
            (duration * 0.78, lambda f: f.restart_broker(kill=True)),
            (duration * 0.93, FaultInjector.restart_postgres),
            (duration * 0.83, FaultInjector.user_service_outage),
        ]
        kills = [
            duration * fraction for fraction in (0.03, 0.18, 0.33, 0.45, 0.55, 0.67, 0.86, 0.97)
        ]
    schedule += [(at + rng.uniform(-2.0, 2.0), FaultInjector.kill_worker) for at in kills]
    return schedule
