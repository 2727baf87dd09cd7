"""Drives the real stack: a worker process, producing, reading topics (read_committed)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from pydantic import BaseModel, SecretStr

from config.kafka import librdkafka_config
from config.settings import ENV_PREFIX, Settings
from pipelines.kafka_clients import PRODUCER_DEFAULTS

REPOSITORY = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for metrics ports and sandboxes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Runs ``argv[2:]`` in place of itself after asking the kernel for SIGTERM when its parent
# (``argv[1]``, the benchmark) dies: a benchmark killed outright leaves no worker, baseline
# or sandbox behind. PR_SET_PDEATHSIG is 1; it survives the exec.
_EXIT_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def exit_with_parent(command: Sequence[str]) -> list[str]:
    """``command``, started so that it gets SIGTERM if this process dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-S", "-c", _EXIT_WITH_PARENT, str(os.getpid()), *command]


@dataclass(frozen=True)
class ToolRun:
    """How a tool of ``bench/`` ended: its exit status and its whole output."""

    returncode: int
    stdout: str
    stderr: str

    def tail(self) -> str:
        """The end of both outputs, for an assertion message."""
        return self.stdout[-6000:] + self.stderr[-3000:]


def run_tool(module: str, arguments: Sequence[str], timeout: float) -> ToolRun:
    """``python -m module arguments`` from the repository (tests run the tools as
    processes: they never import ``bench``). Past ``timeout`` the tool gets SIGTERM, so it
    stops its workers and drops its topics and schemas (its children also get SIGTERM
    should it die: ``exit_with_parent``), and the test fails with its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError(
            f"python -m {module} did not finish in {timeout} s:\n"
            + ToolRun(process.returncode, stdout, stderr).tail()
        ) from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return ToolRun(process.returncode, stdout, stderr)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The ``PAYMENT_WORKER_*`` variables that reproduce ``settings`` in a child process."""
    environment: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, BaseModel):
            value = value.model_dump_json()
        environment[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return environment


class WorkerProcess:
    """``payment-worker run <pipeline>`` as a child process, with its log in a file."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        pipeline: str = "worker",
        *,
        die_with_parent: bool = False,
    ) -> None:
        self.settings = settings
        self.log_path = log_path
        self.pipeline = pipeline
        # SIGTERM when this process dies (``exit_with_parent``); for the benchmark.
        self.die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
            **settings_environment(self.settings),
            "PAYMENT_WORKER_LOG_FORMAT": "json",
        }
        command = [sys.executable, "-m", "pipelines.cli", "run", self.pipeline]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                exit_with_parent(command) if self.die_with_parent else command,
                cwd=REPOSITORY,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self._started().pid

    def _started(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the worker process was not started")
        return self._process

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        return self._process.returncode

    def send_signal(self, signum: int) -> None:
        self._started().send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if it is still running after ``timeout`` seconds."""
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        process = self._started()
        process.send_signal(signal.SIGKILL)
        process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def produce(settings: Settings, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    """Produce ``(key, value)`` pairs to the command topic, in order."""
    producer = Producer(
        {**librdkafka_config(settings), **PRODUCER_DEFAULTS, "enable.idempotence": "true"}
    )
    for key, value in records:
        producer.produce(settings.topic_commands, key=key, value=value)
    if producer.flush(30) != 0:
        raise RuntimeError("commands were not delivered to Kafka")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]

    def json(self) -> Any:
        if self.value is None:
            raise ValueError(f"record {self.partition}/{self.offset} has no value")
        return json.loads(self.value)


def read_topic(
    settings: Settings,
    topic: str,
    *,
    expected: int,
    timeout: float = 60.0,
    settle: float = 1.0,
) -> list[Record]:
    """Read ``topic`` from the beginning as a read_committed consumer.

    Waits until at least ``expected`` records arrived (or ``timeout``), then keeps
    reading for ``settle`` seconds so that extra (duplicate) records are seen too.
    """
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": f"{settings.consumer_group}-reader",
            "enable.auto.commit": "false",
            "isolation.level": "read_committed",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    settle_until: float | None = None
    try:
        while True:
            now = time.monotonic()
            if len(records) >= expected and settle_until is None:
                settle_until = now + settle
            if (settle_until is not None and now >= settle_until) or now >= deadline:
                return records
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            records.append(
                Record(
                    partition=message.partition(),
                    offset=message.offset(),
                    key=message.key(),
                    value=message.value(),
                    headers={k: v or b"" for k, v in message.headers() or []},
                )
            )
    finally:
        consumer.close()
