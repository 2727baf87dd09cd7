"""The benchmark's view of the local stack: fresh topics and schemas, the sandbox services,
bulk producing, and watching outputs become visible to a read_committed consumer."""

from __future__ import annotations

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

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from sqlalchemy import text

from bench.harness import REPOSITORY, free_port
from bench.workload import BenchCommand
from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings, UserServiceSettings
from pipelines.kafka_clients import PRODUCER_DEFAULTS
from pipelines.topics import create_topics, topic_specs
from state.database import create_database_engine, upgrade_schema

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


class SandboxServices:
    """The sandbox gateway and the User Service stand-in, each its own process on loopback.

    Separate processes, so that their HTTP handling competes with the worker for CPU the
    way real services on the same machine would, and not with the benchmark's own clock.
    """

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._processes: list[subprocess.Popen[bytes]] = []
        self.gateway_url = ""
        self.user_service_url = ""

    def start(self) -> SandboxServices:
        gateway, user_service = self._spawn("gateway"), self._spawn("user-service")
        self.gateway_url = self._wait_listening("gateway", *gateway)
        self.user_service_url = self._wait_listening("user-service", *user_service)
        return self

    def _spawn(self, name: str) -> tuple[subprocess.Popen[bytes], int]:
        port = free_port()
        with (self._log_dir / f"sandbox-{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.sandbox_process", name, str(port)],
                cwd=REPOSITORY,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        return process, port

    def _wait_listening(self, name: str, process: subprocess.Popen[bytes], port: int) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the sandbox {name} exited; see {self._log_dir}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return f"http://127.0.0.1:{port}"
            time.sleep(0.1)
        raise RuntimeError(f"the sandbox {name} did not listen on port {port}")

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()


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
) -> OutputWatch:
    """Count records of ``topic`` until ``expected`` are visible (or ``timeout``).

    ``on_batch`` is called with the clock and the count after each poll (to sample
    memory);
    ``still_running`` stops the wait early when the producing process died.
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
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"reading {topic}: {message.error()}")
                    continue
                watch.count += 1
                if keep_values:
                    watch.values.append(message.value() or b"")
            if messages:
                watch.first_seen = watch.first_seen or now
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


def metric_sample(metrics_text: str, name: str, labels: str = "") -> float:
    """One sample of Prometheus text output (0 when absent)."""
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "")
    found = re.search(pattern + r" (\S+)$", metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


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
