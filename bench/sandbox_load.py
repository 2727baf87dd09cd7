"""``python -m bench.sandbox_load``: what one sandbox service costs, and how many calls can wait.

Starts the sandbox gateway (or the User Service stand-in) as its own process, as the
benchmark does, and drives it from this process over ``--connections`` kept-alive
connections, each sending its requests one after the other (as an HTTP/1.1 client does).
It reports the server's CPU per request (its threads' run time over the run,
``bench.procfs.process_cpu_seconds``), requests per second, the most answers held back at
once and the server's thread count.

    python -m bench.sandbox_load                                  # CPU per request, 0 ms
    python -m bench.sandbox_load --connections 3000 --requests 9000 --delay 0.5
                                                                  # 3,000 calls waiting at once
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procfs import process_cpu_seconds, process_threads
from bench.sandbox_services import SandboxService
from sandbox.json_server import raise_open_file_limit

_HEAD_END = b"\r\n\r\n"


def _gateway_request(index: int, run: str) -> bytes:
    body = json.dumps(
        {
            "amount": 1000 + index % 5000,
            "currency": "EUR",
            "token": f"tok_load_{run}_{index}",
            "reference": f"pay-load-{run}-{index}",
        },
        separators=(",", ":"),
    ).encode()
    head = (
        "POST /v1/authorizations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Idempotency-Key: load-{run}-{index}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _profile_request(index: int, run: str) -> bytes:
    return f"GET /v1/users/user-{run}-{index}/profile HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


class _Start:
    """Every connection is opened before any request is sent, so that the calls overlap."""

    def __init__(self, connections: int) -> None:
        self.waiting = connections
        self.go = asyncio.Event()

    async def connected(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.go.set()
        await self.go.wait()


async def _client(
    port: int, requests: list[bytes], statuses: dict[int, int], start: _Start
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await start.connected()
    try:
        for request in requests:
            writer.write(request)
            head = await reader.readuntil(_HEAD_END)
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _drive(port: int, requests: list[bytes], connections: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    start = _Start(connections)
    shares = [requests[index::connections] for index in range(connections)]
    await asyncio.gather(*(_client(port, share, statuses, start) for share in shares))
    return statuses


@dataclass(frozen=True)
class LoadResult:
    service: str
    requests: int
    connections: int
    answer_delay_seconds: float
    seconds: float
    cpu_seconds: float
    statuses: dict[int, int]
    server_stats: dict[str, Any]
    server_threads: int

    def as_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "requests": self.requests,
            "connections": self.connections,
            "answerDelaySeconds": self.answer_delay_seconds,
            "seconds": round(self.seconds, 3),
            "requestsPerSecond": round(self.requests / max(self.seconds, 1e-9), 1),
            "serverCpuMicrosecondsPerRequest": round(
                self.cpu_seconds * 1e6 / max(1, self.requests), 1
            ),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "maxAnswersWaiting": self.server_stats.get("maxAnswersWaiting"),
            "maxOpenConnections": self.server_stats.get("maxOpenConnections"),
            "serverThreads": self.server_threads,
        }


def run_load(
    service: str,
    *,
    requests: int,
    connections: int,
    delay: float,
    log_dir: Path,
) -> LoadResult:
    """Start ``service`` with ``delay``, send ``requests`` over ``connections``, measure."""
    raise_open_file_limit()
    connections = max(1, min(connections, requests))
    run = f"{time.time_ns():x}"
    build = _gateway_request if service == "gateway" else _profile_request
    wire = [build(index, run) for index in range(requests)]
    log_dir.mkdir(parents=True, exist_ok=True)
    server = SandboxService(service, log_dir, answer_delay_seconds=delay).start()
    try:
        cpu_before = process_cpu_seconds(server.pid)
        started = time.perf_counter()
        statuses = asyncio.run(_drive(server.port, wire, connections))
        seconds = time.perf_counter() - started
        cpu_after = process_cpu_seconds(server.pid)
        if cpu_before is None or cpu_after is None:
            raise RuntimeError(f"the {service} sandbox exited during the load run")
        cpu = cpu_after - cpu_before
        threads = process_threads(server.pid)
        stats = server.stats()
    finally:
        server.stop()
    return LoadResult(service, requests, connections, delay, seconds, cpu, statuses, stats, threads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m bench.sandbox_load", description="CPU per request of a sandbox service."
    )
    parser.add_argument("--service", choices=["gateway", "user-service"], default="gateway")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.0, help="answer delay, seconds")
    parser.add_argument("--log-dir", type=Path, default=Path(".bench/sandbox-load-logs"))
    args = parser.parse_args(argv)
    result = run_load(
        args.service,
        requests=args.requests,
        connections=args.connections,
        delay=args.delay,
        log_dir=args.log_dir,
    ).as_json()
    print(json.dumps(result, indent=2))
    return 0 if set(result["statuses"]) <= {"200", "201"} else 1


if __name__ == "__main__":
    sys.exit(main())
