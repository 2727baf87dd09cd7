"""A small JSON-over-HTTP/1.1 server on loopback, shared by the sandbox services.

It is one asyncio event loop in one thread: a request whose answer is delayed (a gateway
that answers after 100 ms, or a ``slow`` token) holds a timer, not a thread, so thousands
of calls can wait at once, and a request costs some tens of microseconds of CPU, so the
benchmark measures the worker rather than its stand-ins (``python -m bench.sandbox_load``
measures it). Only what the worker's HTTP client and the tests send is understood:
HTTP/1.1 with keep-alive, bodies with a ``Content-Length``; anything else is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self

# What a handler answers: status, JSON body, and seconds to wait before sending it (the
# request has taken effect at once; only the answer comes late).
Answer = tuple[int, dict[str, Any], float]
# (method, path, headers with lower-case names, body) -> answer
Handle = Callable[[str, str, dict[str, str], bytes], Answer]

_log = logging.getLogger(__name__)

# Connections waiting to be accepted; the kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
_HEAD_END = b"\r\n\r\n"


def raise_open_file_limit() -> int:
    """Lift this process's open-file limit to its hard limit: a connection is a descriptor,
    and thousands of waiting calls need thousands of them. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft


@dataclass
class ServerCounters:
    """What the server did, for ``/v1/_sandbox/stats``; touched only by the loop's thread."""

    requests: int = 0
    connections: int = 0
    max_connections: int = 0
    waiting: int = 0  # answers held back by a delay right now
    max_waiting: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "openConnections": self.connections,
            "maxOpenConnections": self.max_connections,
            "answersWaiting": self.waiting,
            "maxAnswersWaiting": self.max_waiting,
        }


_STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}


def _response(status: int, answer: dict[str, Any], close: bool) -> bytes:
    body = json.dumps(answer, separators=(",", ":")).encode()
    head = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    return b"".join(
        (
            head,
            b"Content-Type: application/json\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n",
            body,
        )
    )


class _BadRequest(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


def _take_request(buffer: bytearray) -> _Request | None:
    """The first complete request in ``buffer`` (removed from it), or None if incomplete."""
    end = buffer.find(_HEAD_END)
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise _BadRequest(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "head too large")
        return None
    request_line, _, rest = buffer[:end].decode("latin-1").partition("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, path, version = parts
    headers: dict[str, str] = {}
    for line in rest.split("\r\n") if rest else ():
        name, colon, value = line.partition(":")
        if not colon:
            raise _BadRequest(HTTPStatus.BAD_REQUEST, "malformed header")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise _BadRequest(HTTPStatus.LENGTH_REQUIRED, "only Content-Length bodies")
    try:
        length = int(headers.get("content-length") or 0)
    except ValueError:
        raise _BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise _BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    start = end + len(_HEAD_END)
    if len(buffer) < start + length:
        return None
    body = bytes(buffer[start : start + length])
    del buffer[: start + length]
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (version != "HTTP/1.0" or connection == "keep-alive")
    return _Request(method, path, headers, body, keep_alive)


class _Connection(asyncio.Protocol):
    """One client connection: requests answered in order, one at a time (HTTP/1.1)."""

    def __init__(self, server: JsonServer) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._pending: asyncio.TimerHandle | None = None  # a delayed answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a stream transport was expected")
        self._transport = transport
        self._server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
            self._server.counters.waiting -= 1
        self._transport = None
        self._server.closed(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._pending is None:
            self._serve()

    def _serve(self) -> None:
        """Answer the buffered requests until one is incomplete or its answer is delayed."""
        while self._transport is not None and not self._transport.is_closing():
            try:
                request = _take_request(self._buffer)
            except _BadRequest as refusal:
                self._transport.write(_response(refusal.status, {"error": str(refusal)}, True))
                self._transport.close()
                return
            if request is None:
                return
            counters = self._server.counters
            counters.requests += 1
            try:
                status, answer, delay = self._server.handle(
                    request.method, request.path, request.headers, request.body
                )
            except Exception:  # a stand-in's bug (or a body it cannot read): a 500, logged
                _log.exception("the sandbox handler failed")
                status, answer, delay = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "failed"}, 0.0
            payload = _response(status, answer, not request.keep_alive)
            if delay > 0:
                counters.waiting += 1
                counters.max_waiting = max(counters.max_waiting, counters.waiting)
                loop = asyncio.get_running_loop()
                self._pending = loop.call_later(
                    delay, self._answer_late, payload, request.keep_alive
                )
                return
            self._transport.write(payload)
            if not request.keep_alive:
                self._transport.close()

    def _answer_late(self, payload: bytes, keep_alive: bool) -> None:
        self._pending = None
        self._server.counters.waiting -= 1
        if self._transport is None:
            return
        self._transport.write(payload)
        if not keep_alive:
            self._transport.close()
            return
        self._serve()


class JsonServer:
    """Serves ``handle`` on a loopback port; in a background thread or in the foreground.

    The port is bound at construction, so ``url`` is known before ``start``; ``stop``
    closes the port and every connection (the service is down, as for a real outage).
    """

    def __init__(self, handle: Handle, host: str, port: int) -> None:
        self.handle = handle
        self.counters = ServerCounters()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(LISTEN_BACKLOG)
        except OSError:
            self._socket.close()
            raise
        self._socket.setblocking(False)
        self._loop = asyncio.new_event_loop()
        self._connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def opened(self, connection: _Connection) -> None:
        self._connections.add(connection)
        self.counters.connections = len(self._connections)
        self.counters.max_connections = max(self.counters.max_connections, len(self._connections))

    def closed(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        self.counters.connections = len(self._connections)

    async def _open(self) -> None:
        self._server = await self._loop.create_server(
            lambda: _Connection(self), sock=self._socket, backlog=LISTEN_BACKLOG
        )
        self._serving.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._open())
            self._loop.run_forever()
        finally:
            self._close_everything()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def _close_everything(self) -> None:
        if self._server is not None:
            self._server.close()
        else:
            self._socket.close()
        for connection in list(self._connections):
            connection.close()
        # Let the transports run their close callbacks before the loop goes.
        self._loop.run_until_complete(asyncio.sleep(0))

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="sandbox-http", daemon=True)
        self._thread.start()
        self._serving.wait(10)
        return self

    def stop(self) -> None:
        if self._thread is None:
            self._socket.close()
            return
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._thread = None

    def serve_forever(self) -> None:
        """In the calling thread, until interrupted (KeyboardInterrupt propagates)."""
        raise_open_file_limit()
        self._run()
