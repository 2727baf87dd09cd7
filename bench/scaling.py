"""Scaling proof: one worker under load, a second and a third join its group, two leave.

    python -m bench.scaling [--rate 100] [--users 2000] [--phase-seconds 30] [--json PATH]

SIGTERM stops it cleanly (its workers stopped, its topics and schema dropped); its workers
also get SIGTERM should it die outright.

On its own topics (12 partitions by default), consumer group and Postgres schema, with the
sandbox gateway served in this process, it runs five phases while a producer thread sends
commands at a steady rate the whole time, so every membership change happens under load.
A phase starts once the group has settled after the previous change (see "settled") and
lasts ``--phase-seconds``:

    phase 1: w1            → w2 starts (join)
    phase 2: w1 w2         → w3 starts (join)
    phase 3: w1 w2 w3      → w1 gets SIGTERM (graceful leave; exit code must be 0)
    phase 4: w2 w3         → w2 gets SIGTERM
    phase 5: w3            → the producer stops, everything drains, w3 gets SIGTERM

Workload: commands for ``--users`` users, keyed by userId, round-robin. Per user, a first
card (creates the gateway customer and attaches the card: 2 events), then a repeating
cycle: add a card (gateway attach), make it the default, update its expiry, remove the
previous card (gateway detach). Every command is valid and must be accepted, and the
number of events each one emits is known, so the run checks against an exact model.

Definitions of what is measured, per membership change at instant T (the new worker's
process is started, or SIGTERM is sent), over the window from T to the next change (or
the end of the load). "Visible" means seen by a read_committed consumer: a tailer in this
process reads the results topic live and notes when each result arrives.

- **pause**: for each partition, the longest time without a new visible result, counted
  from the partition's last result before T; the largest over all partitions, with the
  partition and when its gap began (relative to T: a joining worker needs a few seconds
  to start first). In steady state a partition's gap is about the commit interval plus
  the time between its commands (phase 1 gives the baseline, "gap p."). Per partition,
  because a rebalance does not stop every partition at the same moment: each member
  revokes its partitions when it learns of the rebalance (at its next heartbeat), the
  others keep processing meanwhile.
- **all p.**: the same over all partitions together (the whole group stopped).
- **max latency**: the longest produce → visible time of a command produced in the window;
  compare with the p99 of phase 1.
- **settled**: T until the live workers' /metrics (``payment_worker_partitions_assigned``)
  show every partition assigned among them, each with some. The next phase starts then.
- joins: **assigned** — T until the new worker reports a partition; **1st cmd** — T until
  its ``payment_worker_commands_total`` is above 0. Both include the process start-up and
  have the granularity of the statistics interval (0.5 s) and of the polling (0.25 s).
- leaves: **exit** — SIGTERM until the process exited, and its exit code.

Checks (any failure is a violation; the exit code is then 1): every produced command has
exactly one result and it is ``accepted``; every event id named by a result appears
exactly once in the events topic and no other event appears; each user's event sequence
is 1, 2, 3… in partition order with the model's length; nothing was dead-lettered; the
Postgres inbox holds one row per command; every worker stopped with exit code 0 and none
died on its own; every joining worker was given partitions. Timings are printed, never
judged: this machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.schema import DropSchema

from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings, load_settings
from pipelines.kafka_clients import command_producer, topic_reader
from pipelines.topics import create_topics
from sandbox.gateway_server import SandboxGatewayServer
from state.database import create_database_engine, upgrade_schema
from state.tables import processed_commands
from tests.support.harness import WorkerProcess, free_port, read_topic

logger = logging.getLogger("bench.scaling")

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


# --- The workload ---------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedCommand:
    command_id: str
    user_id: str
    value: bytes
    expected_events: int


class Workload:
    """Valid commands for many users, each user's in an order that is always accepted.

    Per user: a first card (gateway customer created, card attached; the card becomes the
    default), then the cycle add card k → make k the default → update k's expiry →
    remove card k-1. At most two active cards, half of the cycle calls the gateway, and
    every command emits exactly one event (the first two: PaymentMethodAdded and
    DefaultPaymentMethodChanged).
    """

    def __init__(self, users: int, seed: int) -> None:
        self._users = [f"scale-user-{i:05d}" for i in range(users)]
        random.Random(seed).shuffle(self._users)
        self._steps: dict[str, int] = defaultdict(int)
        self._turn = 0

    def next_command(self, issued_at: datetime) -> PlannedCommand:
        user = self._users[self._turn % len(self._users)]
        self._turn += 1
        step = self._steps[user]
        self._steps[user] += 1
        command_id = str(uuid.uuid4())
        command_type, payload, events = self._step(user, step)
        envelope = {
            "commandId": command_id,
            "type": command_type,
            "schemaVersion": 1,
            "issuedAt": issued_at.isoformat(),
            "userId": user,
            "correlationId": f"scaling-{step}",
            "payload": payload,
        }
        return PlannedCommand(command_id, user, json.dumps(envelope).encode(), events)

    @staticmethod
    def _step(user: str, step: int) -> tuple[str, dict[str, Any], int]:
        if step == 0:
            payload = _add_card(user, 0)
            payload["customer"] = {"name": "Scaling Bench", "email": f"{user}@example.test"}
            return "AddPaymentMethod", payload, 2
        card, move = (step - 1) // 4 + 1, (step - 1) % 4
        if move == 0:
            return "AddPaymentMethod", _add_card(user, card), 1
        if move == 1:
            return "SetDefaultPaymentMethod", {"paymentMethodId": _card_id(user, card)}, 1
        if move == 2:
            return (
                "UpdatePaymentMethod",
                {"paymentMethodId": _card_id(user, card), "expMonth": 6, "source": "user"},
                1,
            )
        return "RemovePaymentMethod", {"paymentMethodId": _card_id(user, card - 1)}, 1


def _card_id(user: str, card: int) -> str:
    return f"pm_{user}_{card}"


def _add_card(user: str, card: int) -> dict[str, Any]:
    fingerprint = f"fp_{user}_{card}"
    return {
        "paymentMethodId": _card_id(user, card),
        "gatewayToken": f"tok_{fingerprint}",
        "card": {
            "brand": "visa",
            "last4": "4242",
            "expMonth": 12,
            "expYear": 2031,
            "fingerprint": fingerprint,
        },
        "makeDefault": False,
    }


# --- Threads: the steady producer, the live read_committed tailer, the metrics poller ----


@dataclass(frozen=True)
class ProducedCommand:
    user_id: str
    produced_at: float  # time.monotonic()
    expected_events: int


class LoadProducer(threading.Thread):
    """Produces the workload at a steady rate until stopped; remembers what it sent."""

    def __init__(self, settings: Settings, rate: float, workload: Workload) -> None:
        super().__init__(name="scaling-producer", daemon=True)
        self._settings = settings
        self._rate = rate
        self._workload = workload
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.commands: dict[str, ProducedCommand] = {}
        self.delivery_errors: list[str] = []

    def run(self) -> None:
        producer = command_producer(self._settings)
        started = time.monotonic()
        sent = 0
        while not self._stop_event.is_set():
            due = int((time.monotonic() - started) * self._rate)
            while sent < due:
                planned = self._workload.next_command(datetime.now(UTC))
                producer.produce(
                    self._settings.topic_commands,
                    key=planned.user_id.encode(),
                    value=planned.value,
                    on_delivery=self._delivered,
                )
                with self._lock:
                    self.commands[planned.command_id] = ProducedCommand(
                        planned.user_id, time.monotonic(), planned.expected_events
                    )
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
        if producer.flush(30) != 0:
            self.delivery_errors.append("commands still unsent after 30 s")

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.delivery_errors.append(str(error))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def produced_between(self, start: float, end: float) -> list[tuple[str, float]]:
        with self._lock:
            return [
                (command_id, c.produced_at)
                for command_id, c in self.commands.items()
                if start <= c.produced_at < end
            ]


@dataclass(frozen=True)
class VisibleResult:
    seen_at: float  # time.monotonic() when the read_committed tailer received it
    partition: int
    command_id: str


class ResultTailer(threading.Thread):
    """Reads the results topic live as a read_committed consumer, noting arrival times."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="scaling-tailer", daemon=True)
        self._consumer = topic_reader(settings, settings.topic_results, from_beginning=True)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.results: list[VisibleResult] = []
        self.command_ids: set[str] = set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for message in self._consumer.consume(500, 0.05):
                    if message.error() is not None:
                        continue
                    seen_at = time.monotonic()
                    command_id = str(json.loads(message.value())["commandId"])
                    with self._lock:
                        self.results.append(VisibleResult(seen_at, message.partition(), command_id))
                        self.command_ids.add(command_id)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def snapshot(self) -> list[VisibleResult]:
        with self._lock:
            return list(self.results)

    def seen_all(self, command_ids: Sequence[str]) -> bool:
        with self._lock:
            return all(command_id in self.command_ids for command_id in command_ids)


@dataclass(frozen=True)
class WorkerSample:
    at: float
    assigned: int
    rebalances: int
    commands: int


def scrape_worker(port: int) -> WorkerSample | None:
    """Assignment, rebalances and processed commands from one worker's /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as answer:
            text = answer.read().decode()
    except OSError:
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


@dataclass
class Change:
    """A worker joining or leaving the group, and when the group settled after it."""

    name: str  # "w2 joins", "w1 leaves"
    at: float
    member: Member
    settled_at: float | None = None

    @property
    def is_join(self) -> bool:
        return self.name.endswith("joins")


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


# --- Measurements -----------------------------------------------------------------------


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


def percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass(frozen=True)
class PhaseReport:
    name: str
    workers: list[str]
    started_at: float  # seconds since the run started
    seconds: float
    produced: int
    visible: int
    visible_per_second: float
    latency_p50: float | None
    latency_p99: float | None
    latency_max: float | None
    unseen: int  # produced in this phase, result not visible by the end of the run
    longest_gap: float  # all partitions
    longest_partition_gap: float  # the worst partition
    assignment: dict[str, int]  # worker → partitions, at the end of the phase
    rebalances: dict[str, int]  # worker → rebalances it took part in, so far


@dataclass(frozen=True)
class ChangeReport:
    change: str  # "w2 joins", "w1 leaves"
    at: float  # seconds since the run started
    pause: float  # the worst partition's stall
    pause_partition: int | None
    pause_began: float  # relative to the change
    all_partitions_stall: float
    max_latency: float | None
    settled_after: float | None
    assigned_after: float | None = None  # joins
    first_command_after: float | None = None  # joins
    exit_after: float | None = None  # leaves
    exit_code: int | None = None  # leaves


@dataclass
class Checks:
    commands: int = 0
    results: int = 0
    accepted: int = 0
    events: int = 0
    expected_events: int = 0
    dead_letters: int = 0
    inbox_rows: int = 0
    users: int = 0


@dataclass
class ScalingReport:
    config: dict[str, Any]
    names: dict[str, str]  # topics, group, schema, logs
    phases: list[PhaseReport] = field(default_factory=list)
    changes: list[ChangeReport] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the measurement, not the worker

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": "pass" if self.passed else "FAIL"}


# --- The run ------------------------------------------------------------------------------


def isolated_settings(base: Settings, config: ScalingConfig, gateway_url: str) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return base.model_copy(
        update={
            "gateway": GatewaySettings(
                base_url=gateway_url, allow_plain_http_on_loopback=True, timeout_seconds=2.0
            ),
            "topic_commands": f"scaling.{suffix}.commands",
            "topic_events": f"scaling.{suffix}.events",
            "topic_results": f"scaling.{suffix}.results",
            "topic_dlq": f"scaling.{suffix}.dlq",
            "topic_projection_dlq": f"scaling.{suffix}.projection-dlq",
            "topic_partitions": config.partitions,
            "consumer_group": f"scaling-{suffix}",
            "database_schema": f"scaling_{suffix}",
            "kafka_statistics_interval_ms": STATISTICS_INTERVAL_MS,
            "metrics_host": "127.0.0.1",
        }
    )


def remove_isolated(settings: Settings) -> None:
    engine = create_database_engine(settings)
    try:
        with engine.begin() as connection:
            connection.execute(DropSchema(settings.database_schema, cascade=True))
    finally:
        engine.dispose()
    admin = AdminClient(librdkafka_config(settings))
    names = [
        settings.topic_commands,
        settings.topic_events,
        settings.topic_results,
        settings.topic_dlq,
        settings.projection_dlq_topic(),
    ]
    for future in admin.delete_topics(names, request_timeout=30).values():
        with contextlib.suppress(Exception):  # already gone: nothing left to clean
            future.result(timeout=30)


class ScalingRun:
    def __init__(self, settings: Settings, config: ScalingConfig, work_dir: Path) -> None:
        self.settings = settings
        self.config = config
        self.work_dir = work_dir
        self.members: list[Member] = []
        self.producer = LoadProducer(settings, config.rate, Workload(config.users, config.seed))
        self.tailer = ResultTailer(settings)
        self.poller = MetricsPoller(self.members)
        self.origin = time.monotonic()
        # (name, start) of each phase; the end of the last one is when the load stops.
        self.phase_marks: list[tuple[str, float]] = []
        self.load_stopped_at = 0.0
        self.changes: list[Change] = []
        # (assignment, rebalances) per live worker at the end of each phase.
        self.phase_ends: list[tuple[dict[str, int], dict[str, int]]] = []
        self.violations: list[str] = []

    # Membership -----------------------------------------------------------------------

    def start_member(self, name: str) -> Member:
        port = free_port()
        worker_settings = self.settings.model_copy(
            update={
                "metrics_port": port,
                "quixstreams_state_dir": self.work_dir / f"{name}-state",
            }
        )
        process = WorkerProcess(
            worker_settings, self.work_dir / f"{name}.log", die_with_parent=True
        )
        member = Member(name, process, port)
        logger.info("starting %s (metrics on port %d)", name, port)
        member.started_at = time.monotonic()
        member.process.start()
        self.members.append(member)
        return member

    def stop_member(self, member: Member) -> None:
        logger.info("SIGTERM to %s", member.name)
        member.stop_sent_at = time.monotonic()
        member.exit_code = member.process.stop(timeout=60)
        member.exited_at = time.monotonic()
        if member.exit_code != 0:
            self.violations.append(
                f"{member.name} exited with code {member.exit_code} after SIGTERM (expected 0)"
            )

    def live_members(self) -> list[Member]:
        return [m for m in self.members if m.stop_sent_at is None]

    def check_alive(self) -> None:
        for member in self.live_members():
            if not member.process.is_running():
                self.violations.append(
                    f"{member.name} died on its own: see {member.process.log_path}"
                )
                member.stop_sent_at = time.monotonic()

    # Phases ---------------------------------------------------------------------------

    def wait_for_first_result(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.tailer.snapshot():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no result within {timeout:.0f} s of starting w1: see {self.work_dir}/w1.log"
                )
            self.check_alive()
            time.sleep(0.1)

    def wait_until_caught_up(self) -> None:
        """Let w1 work off the backlog of its start-up, so phase 1 is a steady baseline:
        every command produced more than a second ago has a visible result."""
        timeout = self.config.catch_up_timeout_seconds
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            produced = self.producer.produced_between(self.origin, time.monotonic() - 1.0)
            if self.tailer.seen_all([command_id for command_id, _ in produced]):
                return
            time.sleep(0.5)
        logger.info("w1 did not catch up with the load within %.0f s; going on", timeout)

    def phase_name(self) -> str:
        return f"{len(self.phase_marks) + 1}: " + " ".join(m.name for m in self.live_members())

    def hold_phase(self, name: str) -> None:
        self.phase_marks.append((name, time.monotonic()))
        logger.info("phase %s", name)
        deadline = time.monotonic() + self.config.phase_seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
        self.check_alive()
        self.phase_ends.append(self.snapshot_members())

    def snapshot_members(self) -> tuple[dict[str, int], dict[str, int]]:
        assignment: dict[str, int] = {}
        rebalances: dict[str, int] = {}
        for member in self.live_members():
            latest = member.latest()
            assignment[member.name] = latest.assigned if latest else -1
            rebalances[member.name] = latest.rebalances if latest else -1
        return assignment, rebalances

    def run(self) -> ScalingReport:
        self.tailer.start()
        self.poller.start()
        first = self.start_member("w1")
        self.producer.start()
        self.wait_for_first_result()
        self.wait_until_caught_up()
        time.sleep(self.config.warmup_seconds)
        self.hold_phase(self.phase_name())
        for name in ("w2", "w3"):
            member = self.start_member(name)
            change = Change(f"{name} joins", member.started_at, member)
            self.changes.append(change)
            self.wait_until_settled(change)
            self.hold_phase(self.phase_name())
        for member in (first, self.members[1]):
            change = Change(f"{member.name} leaves", time.monotonic(), member)
            self.changes.append(change)
            self.stop_member(member)
            self.wait_until_settled(change)
            self.hold_phase(self.phase_name())
        self.load_stopped_at = time.monotonic()
        self.producer.stop()
        self.drain()
        last = self.members[2]
        self.stop_member(last)
        self.poller.stop()
        self.tailer.stop()
        return self.report()

    def wait_until_settled(self, change: Change, timeout: float = 90.0) -> None:
        """Wait until the live workers' /metrics show every partition assigned among them,
        each worker having some, so that phases measure a settled group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            latest = [m.latest() for m in self.live_members()]
            fresh = [s.assigned for s in latest if s is not None and s.at > change.at]
            spread = fresh and len(fresh) == len(latest) and min(fresh) > 0
            if spread and sum(fresh) == self.config.partitions:
                change.settled_at = time.monotonic()
                return
            time.sleep(0.1)
        self.violations.append(
            f"after '{change.name}' the partitions were not spread over the live workers "
            f"within {timeout:.0f} s"
        )

    def drain(self) -> None:
        commands = list(self.producer.commands)
        logger.info("load stopped after %d commands; waiting for every result", len(commands))
        deadline = time.monotonic() + self.config.drain_timeout_seconds
        next_note = time.monotonic() + 10
        while not self.tailer.seen_all(commands):
            if time.monotonic() > next_note:
                next_note += 10
                logger.info("%d results visible", len(self.tailer.command_ids))
            if time.monotonic() > deadline:
                self.violations.append(
                    f"not every result was visible {self.config.drain_timeout_seconds:.0f} s "
                    "after the load stopped"
                )
                return
            self.check_alive()
            time.sleep(0.2)

    # Report ---------------------------------------------------------------------------

    def report(self) -> ScalingReport:
        report = ScalingReport(
            config=asdict(self.config),
            names={
                "commands": self.settings.topic_commands,
                "events": self.settings.topic_events,
                "results": self.settings.topic_results,
                "group": self.settings.consumer_group,
                "schema": self.settings.database_schema,
                "logs": str(self.work_dir),
            },
        )
        visible = sorted(self.tailer.snapshot(), key=lambda r: r.seen_at)
        report.phases = self.phase_reports(visible)
        report.changes = self.change_reports(visible)
        report.checks, violations = verify(self.settings, self.producer)
        report.violations = (
            self.violations
            + [f"producer: {error}" for error in self.producer.delivery_errors]
            + violations
        )
        if report.phases and report.phases[0].visible_per_second < 0.9 * self.config.rate:
            report.notes.append(
                f"one worker made {report.phases[0].visible_per_second:g} results/s visible "
                f"against {self.config.rate:g}/s produced: the load exceeds its capacity on "
                "this machine now, so latencies and pauses include a growing backlog; "
                "lower --rate"
            )
        for change in self.changes:
            if change.is_join and change.member.first_sample_at(_has_partitions) is None:
                report.violations.append(f"{change.member.name} joined but got no partition")
        return report

    def window_end(self, start: float) -> float:
        """The next change after ``start``, or when the load stopped."""
        later = [change.at for change in self.changes if change.at > start]
        return min([*later, self.load_stopped_at])

    def first_visible(self, visible: Sequence[VisibleResult]) -> dict[str, float]:
        seen: dict[str, float] = {}
        for result in visible:
            seen.setdefault(result.command_id, result.seen_at)
        return seen

    def latencies(
        self, start: float, end: float, seen: dict[str, float]
    ) -> tuple[list[float], int]:
        latencies: list[float] = []
        unseen = 0
        for command_id, produced_at in self.producer.produced_between(start, end):
            if command_id in seen:
                latencies.append(seen[command_id] - produced_at)
            else:
                unseen += 1
        return latencies, unseen

    def phase_reports(self, visible: Sequence[VisibleResult]) -> list[PhaseReport]:
        seen = self.first_visible(visible)
        times = [r.seen_at for r in visible]
        by_partition = _times_by_partition(visible)
        phases: list[PhaseReport] = []
        for index, (name, start) in enumerate(self.phase_marks):
            # A phase is the settled group: from when the partitions were spread until
            # the next change; what happens in between belongs to the change.
            end = self.window_end(start)
            latencies, unseen = self.latencies(start, end, seen)
            count = sum(1 for t in times if start <= t < end)
            assignment, rebalances = self.phase_ends[index]
            phases.append(
                PhaseReport(
                    name=name,
                    workers=name.split(": ", 1)[1].split(),
                    started_at=round(start - self.origin, 2),
                    seconds=round(end - start, 2),
                    produced=len(latencies) + unseen,
                    visible=count,
                    visible_per_second=round(count / (end - start), 1),
                    latency_p50=_rounded(percentile(latencies, 0.5)),
                    latency_p99=_rounded(percentile(latencies, 0.99)),
                    latency_max=_rounded(max(latencies, default=None)),
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

    def change_reports(self, visible: Sequence[VisibleResult]) -> list[ChangeReport]:
        seen = self.first_visible(visible)
        times = [r.seen_at for r in visible]
        by_partition = _times_by_partition(visible)
        reports: list[ChangeReport] = []
        for change in self.changes:
            at, member = change.at, change.member
            end = self.window_end(at)
            pause, partition, began = worst_partition_gap(by_partition, at, end)
            latencies, _ = self.latencies(at, end, seen)
            joined = change.is_join
            reports.append(
                ChangeReport(
                    change=change.name,
                    at=round(at - self.origin, 2),
                    pause=round(pause, 3),
                    pause_partition=partition,
                    pause_began=round(began - at, 2),
                    all_partitions_stall=round(longest_gap(times, at, end)[0], 3),
                    max_latency=_rounded(max(latencies, default=None)),
                    settled_after=_since(change.settled_at, at),
                    assigned_after=_since(member.first_sample_at(_has_partitions), at)
                    if joined
                    else None,
                    first_command_after=_since(member.first_sample_at(_has_processed), at)
                    if joined
                    else None,
                    exit_after=None if joined else _since(member.exited_at, at),
                    exit_code=None if joined else member.exit_code,
                )
            )
        return reports


def _times_by_partition(visible: Sequence[VisibleResult]) -> dict[int, list[float]]:
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


def _has_partitions(sample: WorkerSample) -> bool:
    return sample.assigned > 0


def _has_processed(sample: WorkerSample) -> bool:
    return sample.commands > 0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _since(moment: float | None, origin: float) -> float | None:
    return None if moment is None else round(moment - origin, 2)


# --- Verification against the model ----------------------------------------------------


def verify(settings: Settings, producer: LoadProducer) -> tuple[Checks, list[str]]:
    """Compare a read_committed read of every output topic and Postgres with the model."""
    produced = producer.commands
    checks = Checks(
        commands=len(produced),
        expected_events=sum(c.expected_events for c in produced.values()),
        users=len({c.user_id for c in produced.values()}),
    )
    results = [
        r.json()
        for r in read_topic(
            settings, settings.topic_results, expected=len(produced), timeout=120, settle=3
        )
    ]
    events = [
        e.json()
        for e in read_topic(
            settings, settings.topic_events, expected=checks.expected_events, timeout=120, settle=3
        )
    ]
    checks.results, checks.events = len(results), len(events)
    checks.accepted = sum(1 for r in results if r["status"] == "accepted")
    checks.dead_letters = len(read_topic(settings, settings.topic_dlq, expected=0, settle=3))
    checks.inbox_rows = inbox_rows(settings)
    violations = [
        *result_violations(produced, results),
        *event_violations(produced, results, events),
    ]
    if checks.dead_letters:
        violations.append(f"{checks.dead_letters} records were dead-lettered")
    if checks.inbox_rows != len(produced):
        violations.append(
            f"Postgres inbox holds {checks.inbox_rows} rows for {len(produced)} commands"
        )
    return checks, violations


def result_violations(
    produced: dict[str, ProducedCommand], results: Sequence[dict[str, Any]]
) -> list[str]:
    """Exactly one result per produced command, and every one accepted."""
    violations: list[str] = []
    counts = Counter(str(r["commandId"]) for r in results)
    missing = set(produced) - set(counts)
    if missing:
        violations.append(f"{len(missing)} commands have no result, e.g. {sorted(missing)[:3]}")
    duplicated = sum(1 for n in counts.values() if n > 1)
    if duplicated:
        violations.append(f"{duplicated} commands have more than one result")
    unknown = set(counts) - set(produced)
    if unknown:
        violations.append(f"{len(unknown)} results for commands this run did not produce")
    statuses = Counter(f"{r['status']}:{r.get('reason')}" for r in results)
    if any(r["status"] != "accepted" for r in results):
        violations.append(f"not every command was accepted: {dict(statuses)}")
    return violations


def event_violations(
    produced: dict[str, ProducedCommand],
    results: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> list[str]:
    """Each announced event exactly once, nothing else, and per-user sequences 1..n."""
    violations: list[str] = []
    announced = {str(e) for r in results for e in r.get("eventIds", [])}
    counts = Counter(str(e["eventId"]) for e in events)
    repeated = sum(1 for n in counts.values() if n > 1)
    if repeated:
        violations.append(f"{repeated} event ids appear more than once")
    if set(counts) != announced:
        violations.append(
            f"events and results disagree: {len(announced - set(counts))} announced events "
            f"missing, {len(set(counts) - announced)} events that no result names"
        )
    expected = sum(c.expected_events for c in produced.values())
    if len(events) != expected:
        violations.append(f"{len(events)} events, the model expects {expected}")
    expected_per_user: Counter[str] = Counter()
    for command in produced.values():
        expected_per_user[command.user_id] += command.expected_events
    # Read in partition order, and a user's events are all on one partition.
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in events:
        sequences[str(event["userId"])].append(int(event["sequence"]))
    broken = [
        user
        for user, count in expected_per_user.items()
        if sequences.get(user) != list(range(1, count + 1))
    ]
    if broken:
        violations.append(
            f"{len(broken)} users' event sequences are not 1..n in order, e.g. {broken[:3]}"
        )
    return violations


def inbox_rows(settings: Settings) -> int:
    engine = create_database_engine(settings)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(
                select(func.count()).select_from(processed_commands)
            ).scalar_one()
            return count
    finally:
        engine.dispose()


# --- Entry points -------------------------------------------------------------------------


def run_scaling(base: Settings, config: ScalingConfig, work_dir: Path) -> ScalingReport:
    """Run the whole proof on fresh topics, group and schema; removes them afterwards."""
    gateway = SandboxGatewayServer().start()
    settings = isolated_settings(base, config, gateway.url)
    create_topics(settings)
    engine = create_database_engine(settings)
    try:
        upgrade_schema(engine, settings.database_schema)
    finally:
        engine.dispose()
    run = ScalingRun(settings, config, work_dir)
    try:
        return run.run()
    finally:
        for member in run.members:
            member.process.stop(timeout=30)
        gateway.stop()
        if not config.keep:
            remove_isolated(settings)


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


def _parser() -> argparse.ArgumentParser:
    defaults = ScalingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="One worker under load, then two and three in its group, then back to one; "
        "checks exactly-once and measures the pause at each rebalance.",
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="commands per second")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument(
        "--commands",
        type=int,
        help="about this many commands in all: sets --phase-seconds from --rate",
    )
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--phase-seconds", type=float, default=defaults.phase_seconds)
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=defaults.catch_up_timeout_seconds,
        dest="catch_up",
        help="how long w1 may take to work off the backlog of its start-up",
    )
    parser.add_argument("--warmup-seconds", type=float, default=defaults.warmup_seconds)
    parser.add_argument(
        "--drain-timeout", type=float, default=defaults.drain_timeout_seconds, dest="drain"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", action="store_true", help="keep topics and schema afterwards")
    parser.add_argument("--log-dir", type=Path, help="worker logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A stopped run still stops its workers and drops its topics and schema.
    signal.signal(signal.SIGTERM, _interrupt)
    phase_seconds = args.phase_seconds
    if args.commands is not None:
        phase_seconds = max(5.0, (args.commands / args.rate - args.warmup_seconds) / 5)
    config = ScalingConfig(
        rate=args.rate,
        users=args.users,
        partitions=args.partitions,
        catch_up_timeout_seconds=args.catch_up,
        warmup_seconds=args.warmup_seconds,
        phase_seconds=phase_seconds,
        drain_timeout_seconds=args.drain,
        keep=args.keep,
        seed=args.seed,
    )
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    work_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="payment-worker-scaling-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    report = run_scaling(load_settings(), config, work_dir)
    print(render(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
