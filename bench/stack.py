"""The benchmark's view of the local stack: fresh topics and schemas, the sandbox services,
bulk producing, and watching outputs become visible to a read_committed consumer."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from sqlalchemy import text

from bench.workload import BenchCommand
from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings, UserServiceSettings
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.topics import create_topics, topic_specs
from state.database import create_database_engine, upgrade_schema
from tests.support.harness import REPOSITORY, exit_with_parent, free_port

# Producing a large backlog: big batches, a short linger, a queue that holds it all.
BULK_PRODUCER_CONFIG = {
    "linger.ms": "20",
    "batch.size": "1000000",
    "queue.buffering.max.messages": "1000000",
    "queue.buffering.max.kbytes": "1048576",
    "compression.type": "none",
}


# After the producing process exits, how long to keep reading what it committed.
EXIT_DRAIN_SECONDS = 3.0


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


class SandboxService:
    """One sandbox service (``gateway`` or ``user-service``) as its own process on loopback."""

    def __init__(self, name: str, log_dir: Path, *, answer_delay_seconds: float = 0.0) -> None:
        self.name = name
        self.answer_delay_seconds = answer_delay_seconds
        self._log_dir = log_dir
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"the sandbox {self.name} was not started")
        return self._process.pid

    def spawn(self) -> SandboxService:
        """Start the process; ``wait_listening`` waits for its port."""
        self.port = free_port()
        delay = f"-{self.answer_delay_seconds * 1000:g}ms" if self.answer_delay_seconds else ""
        with (self._log_dir / f"sandbox-{self.name}{delay}.log").open("ab") as log:
            self._process = subprocess.Popen(
                exit_with_parent(
                    [
                        sys.executable,
                        "-m",
                        "bench.sandbox_process",
                        self.name,
                        str(self.port),
                        repr(self.answer_delay_seconds),
                    ]
                ),
                cwd=REPOSITORY,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_listening(self, timeout: float = 30.0) -> SandboxService:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"the sandbox {self.name} exited; see {self._log_dir}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"the sandbox {self.name} did not listen on port {self.port}")

    def start(self) -> SandboxService:
        return self.spawn().wait_listening()

    def stats(self) -> dict[str, Any]:
        """``GET /v1/_sandbox/stats``: what it answered (empty when it does not answer)."""
        status, body = http_get(f"{self.url}/v1/_sandbox/stats")
        if status != 200:
            return {}
        document = json.loads(body)
        return document if isinstance(document, dict) else {}

    def usage(self) -> ServiceUsage:
        """Its CPU time and request count now; two of them give the cost per request."""
        stats = self.stats()
        return ServiceUsage(
            process_cpu_seconds(self.pid),
            int(stats.get("requests", 0)),
            int(stats.get("maxAnswersWaiting", 0)),
        )

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass(frozen=True)
class ServiceUsage:
    cpu_seconds: float | None  # None: the process was gone when read
    requests: int
    # The most answers it held back at once (a delayed sandbox), since it started.
    max_answers_waiting: int = 0

    def since(self, before: ServiceUsage) -> dict[str, Any]:
        """Requests served and CPU µs per request between ``before`` and this."""
        requests = self.requests - before.requests
        if self.cpu_seconds is None or before.cpu_seconds is None:
            cpu = None
        else:
            cpu = self.cpu_seconds - before.cpu_seconds
        return {
            "requests": requests,
            "cpuSeconds": None if cpu is None else round(cpu, 3),
            "cpuMicrosecondsPerRequest": (
                round(cpu * 1e6 / requests, 1) if requests and cpu is not None else None
            ),
            "maxAnswersWaitingSinceStart": self.max_answers_waiting,
        }


class SandboxServices:
    """The sandbox gateway and the User Service stand-in, each its own process on loopback.

    Separate processes, so that their HTTP handling competes with the worker for CPU the
    way real services on the same machine would, and not with the benchmark's own clock.
    ``gateway_delay_seconds``: every gateway answer comes that long after its request.
    """

    def __init__(self, log_dir: Path, *, gateway_delay_seconds: float = 0.0) -> None:
        self.gateway = SandboxService(
            "gateway", log_dir, answer_delay_seconds=gateway_delay_seconds
        )
        self.user_service = SandboxService("user-service", log_dir)

    @property
    def gateway_url(self) -> str:
        return self.gateway.url

    @property
    def user_service_url(self) -> str:
        return self.user_service.url

    def start(self) -> SandboxServices:
        try:
            self.gateway.spawn()
            self.user_service.spawn()
            self.gateway.wait_listening()
            self.user_service.wait_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def usage(self) -> dict[str, ServiceUsage]:
        return {"gateway": self.gateway.usage(), "userService": self.user_service.usage()}

    def stop(self) -> None:
        self.gateway.stop()
        self.user_service.stop()


def isolated_settings(
    base: Settings, label: str, *, partitions: int, services: SandboxServices | None
) -> Settings:
    """Settings with unique topics, group and schema for one measurement."""
    suffix = f"{label}_{uuid.uuid4().hex[:10]}"
    update: dict[str, object] = {
        "topic_commands": f"bench.{suffix}.commands",
        "topic_events": f"bench.{suffix}.events",
        "topic_results": f"bench.{suffix}.results",
        "topic_dlq": f"bench.{suffix}.dlq",
        "topic_partitions": partitions,
        "consumer_group": f"bench-{suffix}",
        "database_schema": f"bench_{suffix}",
        "metrics_port": free_port(),
        "metrics_host": "127.0.0.1",
        "log_level": "WARNING",
    }
    if services is not None:
        update["gateway"] = GatewaySettings(
            base_url=services.gateway_url, allow_plain_http_on_loopback=True
        )
        update["user_service"] = UserServiceSettings(
            base_url=services.user_service_url, allow_plain_http_on_loopback=True
        )
    return base.model_copy(update=update)


@contextmanager
def fresh_topics(settings: Settings) -> Iterator[Settings]:
    """The measurement's topics exist inside the block and are deleted after it."""
    create_topics(settings)
    try:
        yield settings
    finally:
        admin = AdminClient(librdkafka_config(settings))
        names = [spec.name for spec in topic_specs(settings)]
        for name, future in admin.delete_topics(names, request_timeout=30).items():
            try:
                future.result(timeout=30)
            except KafkaException as error:  # cleanup is best effort; the figures stand
                print(f"could not delete topic {name}: {error}", file=sys.stderr)


@contextmanager
def fresh_schema(settings: Settings) -> Iterator[Settings]:
    """The worker's tables in the measurement's own schema, dropped after the block."""
    engine = create_database_engine(settings)
    try:
        upgrade_schema(engine, settings.database_schema)
        yield settings
    finally:
        with engine.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{settings.database_schema}" CASCADE'))
        engine.dispose()


def bulk_producer(settings: Settings, extra: dict[str, str] | None = None) -> Producer:
    return Producer(
        {
            **librdkafka_config(settings),
            **PRODUCER_DEFAULTS,
            "enable.idempotence": "true",
            **BULK_PRODUCER_CONFIG,
            **(extra or {}),
        }
    )


def produce_all(settings: Settings, commands: Sequence[BenchCommand]) -> float:
    """Produce every command to the command topic, in order; returns the seconds it took."""
    producer = bulk_producer(settings)
    topic = settings.topic_commands
    started = time.perf_counter()
    for command in commands:
        while True:
            try:
                producer.produce(topic, key=command.key, value=command.value)
                break
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let deliveries drain it
    if producer.flush(120) != 0:
        raise RuntimeError("commands were not delivered to Kafka")
    return time.perf_counter() - started


MIN_TIMED_SECONDS = 1.0


@dataclass
class OutputWatch:
    """What a read_committed consumer saw of one topic, and when."""

    count: int = 0
    first_seen: float | None = None
    last_seen: float | None = None
    complete_at: float | None = None
    values: list[bytes] = field(default_factory=list)

    def rate(self) -> float:
        """Records per second from the first visible output to the last one seen.

        A run whose outputs all became visible within a second (a small one, committed in
        a transaction or two) is timed as one second: a shorter window says nothing.
        """
        if self.first_seen is None or self.last_seen is None:
            return 0.0
        return self.count / max(self.last_seen - self.first_seen, MIN_TIMED_SECONDS)


def committed_reader(settings: Settings, topic: str, group: str) -> Consumer:
    """A read_committed consumer assigned to every partition of ``topic`` from the start."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": group,
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": "10",
            "enable.partition.eof": "false",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    return consumer


def watch_outputs(
    settings: Settings,
    topic: str,
    *,
    expected: int,
    timeout: float,
    keep_values: bool = False,
    on_batch: Callable[[float, int], None] | None = None,
    still_running: Callable[[], bool] | None = None,
    window_seconds: float | None = None,
) -> OutputWatch:
    """Count records of ``topic`` until ``expected`` are visible (or ``timeout``).

    ``on_batch`` is called with the clock and the count after each poll (to sample
    memory and CPU);
    ``still_running`` stops the wait early when the producing process died;
    ``window_seconds`` stops it that long after the first visible output (a measurement
    of what was sustained until then, rather than of the whole backlog).
    """
    consumer = committed_reader(settings, topic, f"{settings.consumer_group}-bench-reader")
    watch = OutputWatch()
    deadline = time.monotonic() + timeout
    try:
        while watch.count < expected and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=0.1)
            now = time.monotonic()
            for message in messages:
                if message.error() is not None:
                    # The reader asks for no partition-EOF events: any error is real.
                    raise RuntimeError(f"reading {topic}: {message.error()}")
                watch.count += 1
                if keep_values:
                    watch.values.append(message.value() or b"")
            if messages:
                if watch.first_seen is None:
                    watch.first_seen = now
                    if window_seconds is not None:
                        deadline = min(deadline, now + window_seconds)
                watch.last_seen = now
            if on_batch is not None:
                on_batch(now, watch.count)
            if still_running is not None and not still_running():
                # Whatever it committed before exiting is still to be read: drain briefly.
                deadline = min(deadline, now + EXIT_DRAIN_SECONDS)
                still_running = None
        if watch.count >= expected:
            watch.complete_at = watch.last_seen
        return watch
    finally:
        consumer.close()


def count_committed_topics(
    settings: Settings, topics: Sequence[str], idle_seconds: float = 1.0
) -> dict[str, int]:
    """How many records of each topic a read_committed consumer sees (until it goes idle)."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"{settings.consumer_group}-bench-counter",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
            "fetch.wait.max.ms": "10",
        }
    )
    counts = dict.fromkeys(topics, 0)
    try:
        assignment = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        consumer.assign(assignment)
        idle_until = time.monotonic() + idle_seconds
        while time.monotonic() < idle_until:
            good = [m for m in consumer.consume(num_messages=10_000, timeout=0.2) if not m.error()]
            for message in good:
                counts[str(message.topic())] += 1
            if good:
                idle_until = time.monotonic() + idle_seconds
        return counts
    finally:
        consumer.close()


def count_committed(settings: Settings, topic: str, idle_seconds: float = 1.0) -> int:
    """How many records of ``topic`` a read_committed consumer sees (until it goes idle)."""
    consumer = committed_reader(settings, topic, f"{settings.consumer_group}-bench-counter")
    count = 0
    idle_until = time.monotonic() + idle_seconds
    try:
        while time.monotonic() < idle_until:
            messages = consumer.consume(num_messages=10_000, timeout=0.2)
            good = [m for m in messages if m.error() is None]
            if good:
                count += len(good)
                idle_until = time.monotonic() + idle_seconds
        return count
    finally:
        consumer.close()


def rss_bytes(pid: int) -> int:
    """The resident set size of a process (VmRSS), 0 when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


def process_threads(pid: int) -> int:
    """How many threads a process has now (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^Threads:\s+(\d+)", status, re.MULTILINE)
    return int(found.group(1)) if found else 0


def process_cpu_seconds(pid: int) -> float | None:
    """CPU time a process's threads have run so far, in nanosecond resolution; None when it
    is gone (a reading of 0 would turn the difference to an earlier reading negative).

    It is the sum of each thread's ``/proc/<pid>/task/<tid>/schedstat`` run time, not
    ``/proc/<pid>/stat``'s utime + stime: those count in clock ticks (10 ms), coarser than a
    short baseline's whole window. A thread that exits takes its time with it; the
    processes measured here keep theirs (consumer, producer and pool threads) for the run.
    """
    total_ns = 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    # The state follows the command name, which may hold spaces and parentheses.
    if stat[stat.rindex(")") + 2] in "ZX":
        return None  # exited, not yet reaped: its threads' times are gone
    for task in tasks:
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread exited between the listing and the read
    return total_ns / 1e9 if tasks else None


def metric_value(metrics_text: str, name: str, labels: str = "") -> float | None:
    """One sample of Prometheus text output, None when the worker does not export it."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    found = re.search(pattern + r" (\S+)$", metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else None


def metric_sample(metrics_text: str, name: str, labels: str = "") -> float:
    """One sample of Prometheus text output (0 when absent)."""
    value = metric_value(metrics_text, name, labels)
    return 0.0 if value is None else value


def wait_until_serving(
    settings: Settings, alive: Callable[[], bool], timeout: float = 90.0
) -> None:
    """Until the worker's metrics port answers: it has started and is joining its group.

    Sooner than ``/readyz``, which also waits for the first Kafka statistics (every
    ``kafka_statistics_interval_ms``, 5 s by default), while the worker is already busy.
    """
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited before it served its metrics")
        if http_get(url, timeout=2)[0] == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the worker did not serve its metrics after {timeout} s")


def wait_until_ready(settings: Settings, alive: Callable[[], bool], timeout: float = 90.0) -> None:
    """Until the worker's /readyz answers 200."""
    url = f"http://127.0.0.1:{settings.metrics_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited before it was ready")
        if http_get(url, timeout=2)[0] == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the worker was not ready after {timeout} s")


def machine() -> dict[str, object]:
    """Cores, memory and CPU model of this machine, for the report."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = 0
    try:
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        memory = int(found.group(1)) * 1024 if found else 0
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 0,
        "memoryGiB": round(memory / 2**30, 1),
        "cpuModel": model,
        "loadAverage1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }
