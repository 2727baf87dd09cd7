"""Faults injected while commands flow, one at a time, each logged with its time.

A schedule is a list of (seconds after the start, fault); the injector runs it in a
thread and, between faults, restarts any worker that exited without being killed (and
logs that: it counts against the run).

Gateway faults are the sandbox's scripted rules (``SandboxGateway.add_faults``), each a
burst of a few requests within a window, after which every rule left is cleared: answers
held back past the workers' timeout after the call took effect (their retries, sent while
the first answer is still in flight, get 409s), 429s with ``Retry-After``, 5xx with and
without the effect, and a restart of the gateway that keeps its state (records and stored
idempotent answers) but loses the answers in flight.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Literal

from bench.chaos.environment import Gateway, PrivateStack, UserService, WorkerPool
from sandbox.faults import FaultRule


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
    """How long the faults last; the pause must outlast the session timeout.

    A gateway burst scripts ``gateway_burst`` requests within ``gateway_window_seconds``;
    a late answer comes ``late_answer_seconds`` after its request, which must be longer
    than the workers' gateway timeout.
    """

    pause_seconds: float
    outage_seconds: float
    gateway_window_seconds: float
    gateway_burst: int
    late_answer_seconds: float
    gateway_down_seconds: float


# Paths of the gateway requests the worker makes (each a POST with an idempotency key).
_AUTHORIZATIONS = "/v1/authorizations"
_CUSTOMERS = "/v1/customers"


class FaultInjector:
    def __init__(
        self,
        pool: WorkerPool,
        stack: PrivateStack,
        user_service: UserService,
        gateway: Gateway,
        log: FaultLog,
        *,
        rng: random.Random,
        timing: FaultTiming,
    ) -> None:
        self.pool = pool
        self.stack = stack
        self.user_service = user_service
        self.gateway = gateway
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

    def _gateway_burst(self, what: str, rules: list[FaultRule]) -> None:
        """Script ``rules`` for a window from their first answer (calls may be held up
        for a while, e.g. by a rebalance), then clear whatever is left of them."""
        window = self.timing.gateway_window_seconds
        answered = self.gateway.scripted_answers()
        planned = sum(rule.times for rule in rules)
        self.gateway.state.add_faults(rules)
        self.log.add(f"gateway: {what}")
        self._await_scripted(answered, 1, 3 * window)
        self._await_scripted(answered, planned, window)
        self.gateway.state.clear_faults()
        self.log.add(f"gateway: {what} over ({self._given(rules, answered)})")

    def _await_scripted(self, answered_before: int, count: int, seconds: float) -> None:
        """Wait until ``count`` scripted answers were given since, or ``seconds`` passed."""
        deadline = time.monotonic() + seconds
        while (
            self.gateway.scripted_answers() - answered_before < count
            and time.monotonic() < deadline
        ):
            self._sleep(0.05)

    def _given(self, rules: list[FaultRule], answered_before: int) -> str:
        given = self.gateway.scripted_answers() - answered_before
        return f"{given} of {sum(rule.times for rule in rules)} scripted answers given"

    def _late_answers(self) -> list[FaultRule]:
        # The call takes effect and its normal answer is stored under its key, but the
        # answer sent comes after the worker's timeout; a retry in the meantime finds the
        # first request in flight (409), a later one gets the stored answer.
        return [
            FaultRule(
                method="POST",
                times=self.timing.gateway_burst,
                effect=True,
                delay_seconds=self.timing.late_answer_seconds,
                status=HTTPStatus.GATEWAY_TIMEOUT,
                body={"error": "scripted late answer"},
            )
        ]

    def gateway_late_answers(self) -> None:
        self._gateway_burst(
            f"answers {self.timing.late_answer_seconds:.1f}s late (after the effect) to "
            f"{self.timing.gateway_burst} calls",
            self._late_answers(),
        )
        self._count("gateway late answers (timeouts, in-flight 409s)")

    def gateway_rate_limited(self) -> None:
        burst = self.timing.gateway_burst * 2
        self._gateway_burst(
            f"429 with Retry-After: 1 to {burst} calls",
            [
                FaultRule(
                    method="POST",
                    times=burst,
                    status=HTTPStatus.TOO_MANY_REQUESTS,
                    headers={"Retry-After": "1"},
                    body={"error": "scripted rate limit"},
                )
            ],
        )
        self._count("gateway 429 burst (Retry-After)")

    def gateway_errors(self, effect: Literal["after", "without", "both"]) -> None:
        """A burst of 5xx: ``after`` the call took effect (a gateway that charged, created
        or attached, then failed: the retry with the same key gets the stored answer and
        nothing is made twice), ``without`` any effect, or ``both`` (authorizations after
        the effect, then any call without)."""
        burst = self.timing.gateway_burst
        after = [
            FaultRule(
                method="POST",
                path=_AUTHORIZATIONS,
                times=burst,
                effect=True,
                status=HTTPStatus.INTERNAL_SERVER_ERROR,
            ),
            FaultRule(
                method="POST",
                times=burst,
                effect=True,
                status=HTTPStatus.BAD_GATEWAY,
                raw="<html>bad gateway</html>",
            ),
        ]
        without = [
            FaultRule(
                method="POST", path=_CUSTOMERS, times=burst, status=HTTPStatus.SERVICE_UNAVAILABLE
            ),
            FaultRule(method="POST", times=burst, status=HTTPStatus.SERVICE_UNAVAILABLE),
        ]
        rules, what = {
            "after": (after, f"500/502 after the effect to {2 * burst} calls"),
            "without": (without, f"503 without the effect to {2 * burst} calls"),
            "both": (
                [after[0], without[1]],
                f"500 after the effect to {burst} authorizations, 503 without it to {burst} calls",
            ),
        }[effect]
        self._gateway_burst(what, rules)
        kind = {"after": "after the effect", "without": "without effect", "both": "both"}
        self._count(f"gateway 5xx burst ({kind[effect]})")

    def restart_gateway(self) -> None:
        # Answers held back when it stops are lost, like a crashed process's; the calls
        # took effect and their answers are stored, so the retries find them.
        rules = self._late_answers()
        answered = self.gateway.scripted_answers()
        self.gateway.state.add_faults(rules)
        # Stop once some answers are held back (calls may pause, e.g. in a rebalance).
        self._await_scripted(answered, 1, 3 * self.timing.gateway_window_seconds)
        self._sleep(min(0.5, self.timing.late_answer_seconds / 4))
        self.gateway.stop()
        self.gateway.state.clear_faults()
        given = self._given(rules, answered)
        self.log.add(
            f"gateway stopped with late answers in flight ({given}); "
            f"down for {self.timing.gateway_down_seconds:.1f}s"
        )
        self._sleep(self.timing.gateway_down_seconds)
        self.gateway.start()
        self.log.add("gateway up again, same state (records, stored answers)")
        self._count("gateway restart keeping its state")

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
    if small:
        schedule += [
            (duration * 0.42, FaultInjector.gateway_late_answers),
            (duration * 0.62, FaultInjector.gateway_rate_limited),
            (duration * 0.80, lambda f: f.gateway_errors("both")),
            (duration * 0.93, FaultInjector.restart_gateway),
        ]
    else:
        schedule += [
            (duration * 0.40, FaultInjector.user_service_outage),
            (duration * 0.60, FaultInjector.pause_worker),
            (duration * 0.78, lambda f: f.restart_broker(kill=True)),
            (duration * 0.93, FaultInjector.restart_postgres),
            (duration * 0.83, FaultInjector.user_service_outage),
            (duration * 0.08, FaultInjector.gateway_late_answers),
            (duration * 0.21, FaultInjector.gateway_rate_limited),
            (duration * 0.36, lambda f: f.gateway_errors("without")),
            (duration * 0.48, FaultInjector.restart_gateway),
            (duration * 0.63, lambda f: f.gateway_errors("after")),
            (duration * 0.75, FaultInjector.gateway_late_answers),
            (duration * 0.90, FaultInjector.restart_gateway),
            (duration * 0.985, FaultInjector.gateway_rate_limited),
        ]
        kills = [
            duration * fraction for fraction in (0.03, 0.18, 0.33, 0.45, 0.55, 0.67, 0.86, 0.97)
        ]
    schedule += [(at + rng.uniform(-2.0, 2.0), FaultInjector.kill_worker) for at in kills]
    return schedule
