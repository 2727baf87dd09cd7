"""The chaos run's own world: a private stack, the sandbox services, the worker pool.

The broker and PostgreSQL are restarted during the run, so they are never the shared
stack: ``scripts/stack`` runs a second one from another directory on other ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from config.kafka import librdkafka_config
from config.settings import Settings
from sandbox.gateway_server import SandboxGateway, SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer
from tests.support.harness import REPOSITORY, WorkerProcess

STACK_SCRIPT = REPOSITORY / "scripts" / "stack"


@dataclass(frozen=True)
class StackPorts:
    kafka: int
    kafka_controller: int
    postgres: int


class PrivateStack:
    """``scripts/stack`` with its own ``STACK_DIR`` and ports."""

    def __init__(self, directory: Path, ports: StackPorts, log: Path) -> None:
        self.directory = directory
        self.ports = ports
        self._log = log

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.ports.kafka}"

    @property
    def database_url(self) -> str:
        return (
            "postgresql+psycopg://payment_worker:payment_worker"
            f"@127.0.0.1:{self.ports.postgres}/payments"
        )

    def run(self, *arguments: str) -> None:
        environment = {
            key: value
            for key, value in os.environ.items()
            # The private stack must never fall back to services named in the environment.
            if key not in ("PAYMENT_WORKER_KAFKA_BOOTSTRAP_SERVERS", "PAYMENT_WORKER_DATABASE_URL")
        }
        environment.update(
            STACK_DIR=str(self.directory),
            STACK_KAFKA_PORT=str(self.ports.kafka),
            STACK_KAFKA_CONTROLLER_PORT=str(self.ports.kafka_controller),
            STACK_PG_PORT=str(self.ports.postgres),
        )
        with self._log.open("ab") as log:
            completed = subprocess.run(
                [str(STACK_SCRIPT), *arguments],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
                # Its own process group: a Ctrl-C meant for the run does not cut a
                # restart in half; the run stops the stack itself.
                start_new_session=True,
            )
        if completed.returncode != 0:
            tail = self._log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(
                f"scripts/stack {' '.join(arguments)} failed ({completed.returncode}):\n"
                + "\n".join(tail)
            )


class UserService:
    """The User Service stand-in on a fixed loopback port, which can be stopped and started.

    Stopped means the port refuses connections, as when the service is down.
    """

    def __init__(self) -> None:
        self._server: UserServiceStubServer | None = UserServiceStubServer().start()
        self.port = int(self._server.url.rsplit(":", 1)[1])
        self.calls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self.calls += self._server.stub.calls
            self._server.stop()
            self._server = None

    def start(self) -> None:
        if self._server is None:
            self._server = UserServiceStubServer(port=self.port).start()

    def total_calls(self) -> int:
        return self.calls + (self._server.stub.calls if self._server is not None else 0)


class Gateway:
    """The sandbox gateway on a fixed loopback port; a restart keeps its state.

    The state (records, stored idempotent answers, tombstones, fault rules) is one
    ``SandboxGateway`` object, served by one server at a time: a restart stops the server
    (its in-flight answers are lost, like a crashed process's) and serves the same object
    from a new one on the same port.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.state = SandboxGateway()
        self._server: SandboxGatewayServer | None = SandboxGatewayServer(
            host, 0, gateway=self.state
        ).start()
        self.port = int(self._server.url.rsplit(":", 1)[1])
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def start(self) -> None:
        if self._server is None:
            self._server = SandboxGatewayServer(self.host, self.port, gateway=self.state).start()
            self.restarts += 1

    def scripted_answers(self) -> int:
        """How many requests scripted fault rules have answered so far."""
        return self.state.faults.answered


class WorkerPool:
    """Worker slots, each one process at a time; kills and pauses are deliberate."""

    def __init__(self, settings: list[Settings], log_directory: Path) -> None:
        self._settings = settings
        self._logs = log_directory
        self._lock = threading.Lock()
        self.workers = [self._new(slot) for slot in range(len(settings))]
        self.paused: set[int] = set()
        self.unexpected_exits: list[tuple[int, int | None]] = []

    def _new(self, slot: int) -> WorkerProcess:
        return WorkerProcess(self._settings[slot], self._logs / f"worker-{slot}.log")

    def start_all(self) -> None:
        for worker in self.workers:
            worker.start()

    def kill(self, slot: int) -> int:
        with self._lock:
            worker = self.workers[slot]
            pid = worker.pid
            worker.kill()
            return pid

    def restart(self, slot: int) -> int:
        with self._lock:
            self.workers[slot] = self._new(slot)
            self.workers[slot].start()
            return self.workers[slot].pid

    def pause(self, slot: int) -> int:
        with self._lock:
            pid = self.workers[slot].pid
            os.kill(pid, signal.SIGSTOP)
            self.paused.add(slot)
            return pid

    def resume(self, slot: int) -> None:
        with self._lock:
            os.kill(self.workers[slot].pid, signal.SIGCONT)
            self.paused.discard(slot)

    def running_slots(self) -> list[int]:
        with self._lock:
            return [
                slot
                for slot, worker in enumerate(self.workers)
                if worker.is_running() and slot not in self.paused
            ]

    def restart_exited(self) -> list[tuple[int, int | None]]:
        """Restart workers that exited on their own; returns (slot, exit code) of each."""
        exited = []
        with self._lock:
            for slot, worker in enumerate(self.workers):
                if not worker.is_running():
                    code = worker.stop()
                    exited.append((slot, code))
                    self.workers[slot] = self._new(slot)
                    self.workers[slot].start()
            self.unexpected_exits.extend(exited)
        return exited

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        pending = set(range(len(self.workers)))
        while pending and time.monotonic() < deadline:
            for slot in list(pending):
                url = f"http://127.0.0.1:{self._settings[slot].metrics_port}/readyz"
                try:
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if answer.status == 200:
                            pending.discard(slot)
                except OSError:
                    pass
            time.sleep(0.5)
        return not pending

    def stop_all(self) -> None:
        for slot in list(self.paused):
            try:
                self.resume(slot)
            except ProcessLookupError:
                self.paused.discard(slot)
        for worker in self.workers:
            worker.stop(timeout=20)


def consumer_lag(settings: Settings) -> int:
    """Records of the command topic not yet committed by the worker group."""
    consumer = Consumer(
        {
            **librdkafka_config(settings),
            "group.id": settings.consumer_group,
            "enable.auto.commit": "false",
        }
    )
    try:
        topic = settings.topic_commands
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed(
            [TopicPartition(topic, partition) for partition in partitions], timeout=10
        )
        lag = 0
        for position in committed:
            _, high = consumer.get_watermark_offsets(position, timeout=10)
            lag += high - max(position.offset, 0)
        return lag
    finally:
        consumer.close()
