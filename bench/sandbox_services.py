"""The sandbox gateway and the User Service stand-in as processes of their own on loopback
(``bench.sandbox_process``), with the CPU time and requests each one served.

Separate processes, so that their HTTP handling competes with the worker for CPU the way
real services on the same machine would, and not with the benchmark's own clock.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procfs import process_cpu_seconds
from tests.support.harness import REPOSITORY, exit_with_parent, free_port
from tests.support.probes import http_get


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
