"""``python -m bench.chaos``: commands under faults, then a verdict against a model.

Starts a private stack (its own ``STACK_DIR`` and ports, so the shared one is never
disturbed), three workers in one group, the sandbox gateway and a User Service stand-in;
produces a seeded stream of commands with duplicates and poison while killing, pausing
and restarting things and scripting gateway faults; waits until the group has caught up;
then checks Postgres and every topic against the model, and the gateway's own records
against Postgres and the events (``bench.chaos.checker``). Exit status 0 when every check
passes, 1 on any violation, 2 when the run itself could not be carried out.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from confluent_kafka import KafkaError, Message, Producer
from pydantic import SecretStr
from sqlalchemy import Engine

from bench.chaos.checker import Check, Checker, GatewayRecords, Observed, read_database
from bench.chaos.environment import (
    Gateway,
    PrivateStack,
    StackPorts,
    UserService,
    WorkerPool,
    consumer_lag,
)
from bench.chaos.faults import FaultInjector, FaultLog, FaultTiming, build_schedule, format_record
from bench.chaos.model import replay
from bench.chaos.workload import Message as Planned
from bench.chaos.workload import WorkloadSpec, describe, generate
from config.kafka import librdkafka_config
from config.settings import (
    GatewaySettings,
    ProfileCacheSettings,
    Settings,
    UserServiceSettings,
)
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.topics import create_topics
from schemas.errors import InvalidReason
from state.database import create_database_engine, upgrade_schema
from tests.support.harness import REPOSITORY, free_port, read_topic

WORKERS = 3
PARTITIONS = 12
# The group notices a dead or frozen worker after this; brokers refuse less than 6 s.
SESSION_TIMEOUT_MS = 6000
# The workers' gateway calls: a late answer (a fault) comes after the attempt's timeout;
# attempts and back-off stay within the budget; an open circuit retries soon.
GATEWAY_TIMEOUT_SECONDS = 1.0
GATEWAY_BUDGET_SECONDS = 3.0
LATE_ANSWER_SECONDS = 2.0


# A delivery that has not succeeded in this long is given up and the message sent again.
TRAFFIC_MESSAGE_TIMEOUT_MS = 20_000


def _traffic_producer(tools: Settings) -> Producer:
    """An idempotent producer of the run's commands, like the users' (a lost report is
    resent, never duplicated by the producer itself)."""
    return Producer(
        {
            **librdkafka_config(tools),
            **PRODUCER_DEFAULTS,
            "enable.idempotence": "true",
            "message.timeout.ms": str(TRAFFIC_MESSAGE_TIMEOUT_MS),
        }
    )


@dataclass(frozen=True)
class Mode:
    name: str
    messages: int
    users: int
    traffic_seconds: float
    drain_timeout: float
    pause_seconds: float
    outage_seconds: float
    # Each gateway fault scripts about this many answers within this window.
    gateway_burst: int
    gateway_window_seconds: float


SMALL = Mode("small", 3000, 150, 60.0, 150.0, 12.0, 6.0, 10, 2.0)
FULL = Mode("full", 30000, 800, 240.0, 420.0, 14.0, 8.0, 30, 4.0)


@dataclass(frozen=True)
class Running:
    """What a run has built, for the verdict."""

    settings: Settings
    tools: Settings
    engine: Engine
    pool: WorkerPool
    gateway: Gateway
    user_service: UserService
    injector: FaultInjector
    log: FaultLog


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Commands under faults on a private stack, checked against a model.",
    )
    parser.add_argument(
        "--small", action="store_true", help="a few thousand commands, a few faults"
    )
    parser.add_argument("--seed", type=int, default=None, help="workload and fault seed")
    parser.add_argument("--messages", type=int, default=None, help="messages to produce")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of traffic")
    parser.add_argument(
        "--stack-dir", type=Path, default=REPOSITORY / ".stack-chaos", help="STACK_DIR"
    )
    parser.add_argument("--kafka-port", type=int, default=19092)
    parser.add_argument("--kafka-controller-port", type=int, default=19093)
    parser.add_argument("--pg-port", type=int, default=55433)
    parser.add_argument("--log-dir", type=Path, default=None, help="worker and stack logs")
    parser.add_argument(
        "--keep-stack", action="store_true", help="leave the private stack running and its data"
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class ChaosRun:
    def __init__(self, options: argparse.Namespace) -> None:
        base = SMALL if options.small else FULL
        self.mode = Mode(
            base.name,
            options.messages or base.messages,
            base.users,
            options.seconds or base.traffic_seconds,
            base.drain_timeout,
            base.pause_seconds,
            base.outage_seconds,
            base.gateway_burst,
            base.gateway_window_seconds,
        )
        self.seed = (
            options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
        )
        self.options = options
        self.run_id = uuid.uuid4().hex[:8]
        self.log_dir: Path = options.log_dir or Path(
            tempfile.mkdtemp(prefix=f"payment-worker-chaos-{self.run_id}-")
        )
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stack = PrivateStack(
            options.stack_dir.resolve(),
            StackPorts(options.kafka_port, options.kafka_controller_port, options.pg_port),
            self.log_dir / "stack.log",
        )

    def settings(self, gateway_url: str, user_service_url: str) -> Settings:
        name = f"chaos_{self.run_id}"
        return Settings(
            kafka_bootstrap_servers=self.stack.bootstrap_servers,
            database_url=SecretStr(self.stack.database_url),
            database_schema=name,
            topic_commands=f"chaos.{self.run_id}.commands",
            topic_events=f"chaos.{self.run_id}.events",
            topic_results=f"chaos.{self.run_id}.results",
            topic_dlq=f"chaos.{self.run_id}.dlq",
            topic_partitions=PARTITIONS,
            consumer_group=f"chaos-{self.run_id}",
            kafka_session_timeout_ms=SESSION_TIMEOUT_MS,
            # max.poll.interval.ms is left at its default: set through kafka_extra_config
            # (strings) it crashes quixstreams at start (it divides the value by 1000). A
            # SIGSTOP freezes the heartbeat thread too, so the session timeout fences it.
            gateway=GatewaySettings(
                base_url=gateway_url,
                allow_plain_http_on_loopback=True,
                timeout_seconds=GATEWAY_TIMEOUT_SECONDS,
                total_budget_seconds=GATEWAY_BUDGET_SECONDS,
                circuit_reset_seconds=3.0,
            ),
            user_service=UserServiceSettings(
                base_url=user_service_url,
                allow_plain_http_on_loopback=True,
                # Recover soon after an outage ends: the run has minutes, not hours.
                circuit_reset_seconds=3.0,
            ),
            # Short-lived profiles and no stale serving, so outages hold commands up.
            profile_cache=ProfileCacheSettings(ttl_seconds=20.0, stale_if_error_seconds=0.0),
            metrics_host="127.0.0.1",
            quixstreams_state_dir=self.log_dir / "quixstreams",
        )

    def execute(self) -> int:
        mode = self.mode
        print(
            f"chaos run {self.run_id}: mode {mode.name}, seed {self.seed}, {WORKERS} workers, "
            f"{PARTITIONS} partitions, {mode.messages} messages over {mode.traffic_seconds:.0f}s"
        )
        print(f"logs: {self.log_dir}")
        messages = generate(WorkloadSpec(messages=mode.messages, users=mode.users, seed=self.seed))
        print(f"workload: {describe(messages)}")
        started = time.monotonic()
        self.stack.run("down", "--purge")  # leftovers of an interrupted run
        self.stack.run("up")
        print(f"private stack up in {time.monotonic() - started:.1f}s ({self.stack.directory})")
        try:
            return self._with_stack(messages)
        finally:
            if self.options.keep_stack:
                print(f"private stack left running in {self.stack.directory}")
            else:
                self.stack.run("down", "--purge")

    def _with_stack(self, messages: list[Planned]) -> int:
        gateway = Gateway()
        user_service = UserService()
        settings = self.settings(gateway.url, user_service.url)
        # The tools' own clients need none of the workers' consumer tuning.
        tools = settings.model_copy(update={"kafka_extra_config": {}})
        engine = create_database_engine(settings)
        upgrade_schema(engine, settings.database_schema)
        create_topics(tools)
        pool = WorkerPool(
            [
                settings.model_copy(
                    update={
                        "metrics_port": free_port(),
                        # Stable per slot, as a StatefulSet would give: a restarted worker
                        # fences its killed predecessor's transaction at once.
                        "kafka_transactional_id": f"{settings.consumer_group}-worker-{slot}",
                    }
                )
                for slot in range(WORKERS)
            ],
            self.log_dir,
        )
        log = FaultLog()
        injector = FaultInjector(
            pool,
            self.stack,
            user_service,
            gateway,
            log,
            rng=random.Random(self.seed),
            timing=FaultTiming(
                pause_seconds=self.mode.pause_seconds,
                outage_seconds=self.mode.outage_seconds,
                gateway_window_seconds=self.mode.gateway_window_seconds,
                gateway_burst=self.mode.gateway_burst,
                late_answer_seconds=LATE_ANSWER_SECONDS,
                gateway_down_seconds=1.5,
            ),
        )
        try:
            pool.start_all()
            if not pool.wait_ready(90):
                print("warning: not every worker reported ready within 90s")
            print("fault log (as it happens):")
            log.started = time.monotonic()
            faults = injector.start(
                build_schedule(
                    self.mode.traffic_seconds,
                    small=self.mode.name == "small",
                    rng=random.Random(self.seed),
                )
            )
            delivered, failed = self._produce(tools, messages, log)
            faults.join()
            if injector.error is not None:
                # A fault that could not be injected may have left the broker or the
                # database down: nothing after it would be a test of the worker.
                print(f"the run could not be carried out: a fault failed ({injector.error})")
                return 2
            injector.watch_workers()
            drained = self._drain(tools, log, injector)
            running = Running(settings, tools, engine, pool, gateway, user_service, injector, log)
            return self._verdict(running, messages, (delivered, failed), drained)
        finally:
            injector.stopping.set()
            pool.stop_all()
            gateway.stop()
            user_service.stop()
            engine.dispose()

    def _produce(self, tools: Settings, messages: list[Planned], log: FaultLog) -> tuple[int, int]:
        """Produce at a steady rate over the traffic window; returns (delivered, failed).

        A broker restart can leave a librdkafka producer sending to stale metadata until
        its messages time out (confluentinc/librdkafka#4976). The traffic is the run's
        input, not what it tests, so a message whose delivery failed is sent again by a
        new producer (its old one is still polled for the reports of what it holds). The
        model replays what was read back, so a resent message is as good as the first.
        """
        failed: list[Planned] = []
        delivered = 0

        def report(message: Planned) -> Callable[[KafkaError | None, Message], None]:
            def on_delivery(error: KafkaError | None, _: Message) -> None:
                nonlocal delivered
                if error is None:
                    delivered += 1
                else:
                    failed.append(message)

            return on_delivery

        producer = _traffic_producer(tools)
        replaced: list[Producer] = []
        resent = 0

        def send(message: Planned) -> None:
            while True:
                try:
                    producer.produce(
                        tools.topic_commands,
                        message.value,
                        message.key,
                        on_delivery=report(message),
                    )
                    return
                except BufferError:
                    producer.poll(0.5)

        def resend_failed() -> None:
            nonlocal producer, resent
            for stale in replaced:
                stale.poll(0)
            if not failed:
                return
            replaced.append(producer)
            producer = _traffic_producer(tools)
            again, failed[:] = list(failed), []
            resent += len(again)
            log.add(f"traffic: {len(again)} undelivered messages sent again by a new producer")
            for message in again:
                send(message)

        rate = len(messages) / self.mode.traffic_seconds
        for index, message in enumerate(messages):
            ahead = log.started + index / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            send(message)
            producer.poll(0)
            resend_failed()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            producer.flush(1)
            for stale in replaced:
                stale.flush(0.1)
            resend_failed()
            if not failed and len(producer) == 0 and all(len(p) == 0 for p in replaced):
                break
        undelivered = len(messages) - delivered
        log.add(
            f"traffic done: {delivered} delivered ({resent} of them sent again), "
            f"{undelivered} undelivered"
        )
        return delivered, undelivered

    def _drain(self, tools: Settings, log: FaultLog, injector: FaultInjector) -> float:
        """Wait until the group has committed every command; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + self.mode.drain_timeout
        last_report = 0.0
        lag = -1
        while time.monotonic() < deadline:
            injector.watch_workers()
            try:
                lag = consumer_lag(tools)
            except Exception as error:
                print(f"  lag unknown ({error})")
                lag = -1
            if lag == 0:
                log.add(f"consumer lag 0 after {time.monotonic() - started:.1f}s of draining")
                return time.monotonic() - started
            if time.monotonic() - last_report > 10:
                print(f"  ... lag {lag}")
                last_report = time.monotonic()
            time.sleep(1.0)
        log.add(f"gave up draining after {self.mode.drain_timeout:.0f}s: lag {lag}")
        return time.monotonic() - started

    def _verdict(
        self,
        running: Running,
        messages: list[Planned],
        sent: tuple[int, int],
        drained: float,
    ) -> int:
        tools = running.tools
        delivered, failed = sent
        commands = read_topic(tools, tools.topic_commands, expected=delivered, timeout=60, settle=1)
        poison: dict[tuple[bytes | None, bytes], InvalidReason] = {
            (message.key, message.value): message.poison_reason
            for message in messages
            if message.poison_reason is not None
        }
        expectation = replay(commands, poison)
        expected_events = sum(len(m.events) for m in expectation.messages)
        results = read_topic(
            tools, tools.topic_results, expected=len(commands), timeout=120, settle=3
        )
        events = read_topic(
            tools, tools.topic_events, expected=expected_events, timeout=60, settle=2
        )
        dead_letters = read_topic(
            tools,
            tools.topic_dlq,
            expected=sum(1 for m in expectation.messages if m.poison_reason),
            timeout=60,
            settle=2,
        )
        observed = Observed(
            results=results,
            events=events,
            dead_letters=dead_letters,
            lag=consumer_lag(tools),
            unexpected_worker_exits=len(running.pool.unexpected_exits),
        )
        records = GatewayRecords.from_json(running.gateway.state.records())
        checks = Checker(expectation, observed, read_database(running.engine), records).run()
        restarts = sum(
            path.read_text(errors="replace").count("the pipeline restarts from its last commit")
            for path in self.log_dir.glob("worker-*.log")
        )
        statuses: dict[str, int] = {}
        for message in expectation.messages:
            status = message.result.status or "duplicate"
            statuses[status] = statuses.get(status, 0) + 1
        print()
        print("fault log:")
        for record in running.log.records:
            print(f"  {format_record(record)}")
        print(
            "faults: "
            + ", ".join(f"{kind} x{count}" for kind, count in running.injector.counts.items())
        )
        print()
        print(
            f"traffic: {delivered} messages delivered ({failed} failed) in "
            f"{self.mode.traffic_seconds:.0f}s ({delivered / self.mode.traffic_seconds:.0f}/s); "
            f"drained {drained:.1f}s after the traffic ended"
        )
        print(
            "expected outcomes: "
            + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
            + f"; {expected_events} events on {len(expectation.keys)} keys"
        )
        print(
            f"read back (read_committed): {len(commands)} commands, {len(results)} results, "
            f"{len(events)} events, {len(dead_letters)} dead letters"
        )
        stats = running.gateway.state.stats()
        print(
            f"gateway: {records.summary()}; "
            + ", ".join(f"{name} {value}" for name, value in sorted(stats.items()))
        )
        print(
            f"User Service: {running.user_service.total_calls()} calls; "
            f"pipeline restarts after dependency failures: {restarts}"
        )
        print()
        return report(checks)


def report(checks: list[Check]) -> int:
    print("checks:")
    for check in checks:
        status = "ok  " if check.violations == 0 else "FAIL"
        print(f"  {status} {check.name}: {check.violations}")
        for example in check.examples:
            print(f"         e.g. {example}")
    failed = [check for check in checks if check.violations]
    if failed:
        print(f"verdict: FAIL ({len(failed)} of {len(checks)} checks violated)")
        return 1
    print(f"verdict: PASS (all {len(checks)} checks hold)")
    return 0


def main(argv: list[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return ChaosRun(options).execute()
    except KeyboardInterrupt:
        print("interrupted; workers and the private stack were stopped", file=sys.stderr)
        return 130
