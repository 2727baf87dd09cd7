"""A small JSON-over-HTTP/1.1 server on loopback, shared by the sandbox services.

It is one asyncio event loop in one thread: a request whose answer is delayed (a gateway
that answers after 100 ms, or a ``slow`` token) holds a timer, not a thread, so thousands
of calls can wait at once, and a request costs some tens of microseconds of CPU, so the
benchmark measures the worker rather than its stand-ins (``python -m bench.sandbox_load``
measures it). A handler's ``Answer`` is a JSON object or raw bytes, with optional extra
headers, a delay, and a callback for when it has been written (or was due: its connection
closed first). Only what the worker's HTTP client and the tests send is understood:
HTTP/1.1 with keep-alive, bodies with a ``Content-Length``; anything else is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import resource
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Self


@dataclass(slots=True)  # not frozen: a third of the cost to make, and one is made per request
class Answer:
    """What a handler answers (not changed once returned); ``status`` and ``body`` needed.

    ``body``: a JSON object, or raw bytes (sent as ``text/plain`` unless ``headers`` name a
    Content-Type). ``delay``: seconds to wait before sending it (the request has taken
    effect at once; only the answer comes late). ``headers``: extra answer headers.
    ``done``: called once in the loop's thread when the answer has been written; if its
    connection closes first, when it was due; if the server stops first, then.
    """

    status: int
    body: dict[str, Any] | bytes
    delay: float = 0.0
    headers: Mapping[str, str] | None = None
    done: Callable[[], None] | None = None


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


def _response(
    status: int,
    answer: dict[str, Any] | bytes,
    close: bool,
    headers: Mapping[str, str] | None = None,
) -> bytes:
    head = _STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n".encode()
    if isinstance(answer, bytes):
        body = answer
        content_type = b"Content-Type: text/plain; charset=utf-8\r\n"
    else:
        body = json.dumps(answer, separators=(",", ":")).encode()
        content_type = b"Content-Type: application/json\r\n"
    if headers:
        lines = [f"{name}: {value}\r\n".encode("latin-1") for name, value in headers.items()]
        if any(name.lower() == "content-type" for name in headers):
            content_type = b""
        content_type += b"".join(lines)
    return b"".join(
        (
            head,
            content_type,
            b"Content-Length: ",
            str(len(body)).encode(),
            b"\r\nConnection: close\r\n\r\n" if close else b"\r\n\r\n",
            body,
        )
    )


_FAILED = Answer(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "failed"})


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
        self._pending_done: Callable[[], None] | None = None  # its ``Answer.done``

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not isinstance(transport, asyncio.Transport):
            raise TypeError("a stream transport was expected")
        self._transport = transport
        self._server.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._server.counters.waiting -= 1
            done, self._pending_done = self._pending_done, None
            if done is not None:  # never written: done when it was due (or at stop)
                self._server.answer_lost(self._pending.when(), done)
            self._pending = None
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
            answer: Answer | None = None
            try:
                answer = self._server.handle(
                    request.method, request.path, request.headers, request.body
                )
                payload = _response(
                    answer.status, answer.body, not request.keep_alive, answer.headers
                )
            except Exception:  # a stand-in's bug (or a body it cannot read): a 500, logged
                _log.exception("the sandbox handler failed")
                if answer is not None and answer.done is not None:
                    answer.done()
                answer = _FAILED
                payload = _response(answer.status, answer.body, not request.keep_alive)
            if answer.delay > 0:
                counters.waiting += 1
                counters.max_waiting = max(counters.max_waiting, counters.waiting)
                loop = asyncio.get_running_loop()
                self._pending_done = answer.done
                self._pending = loop.call_later(
                    answer.delay, self._answer_late, payload, request.keep_alive
                )
                return
            self._transport.write(payload)
            if answer.done is not None:
                answer.done()
            if not request.keep_alive:
                self._transport.close()

    def _answer_late(self, payload: bytes, keep_alive: bool) -> None:
        self._pending = None
        self._server.counters.waiting -= 1
        done, self._pending_done = self._pending_done, None
        if self._transport is None:
            if done is not None:
                done()
            return
        self._transport.write(payload)
        if done is not None:
            done()
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
        self._address: tuple[str, int] = self._socket.getsockname()[:2]
        self._loop = asyncio.new_event_loop()
        self._connections: set[_Connection] = set()
        # ``Answer.done`` of answers whose connection closed before they were due.
        self._lost: dict[int, tuple[asyncio.TimerHandle, Callable[[], None]]] = {}
        self._lost_ids = itertools.count()
        self._stopping = False
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._serving = threading.Event()

    @property
    def url(self) -> str:
        """Known from construction on, and still after ``stop`` (to serve that port again)."""
        host, port = self._address
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._address[1]

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

    def answer_lost(self, when: float, done: Callable[[], None]) -> None:
        """An answer whose connection closed before it was due: the request is still being
        answered until then, so its ``done`` comes at that time, or when the server stops
        (its answers are lost, like a crashed process's)."""
        if self._stopping:
            done()
            return
        lost = next(self._lost_ids)

        def due() -> None:
            del self._lost[lost]
            done()

        self._lost[lost] = (self._loop.call_at(when, due), done)

    def _close_everything(self) -> None:
        self._stopping = True
        if self._server is not None:
            self._server.close()
        else:
            self._socket.close()
        for connection in list(self._connections):
            connection.close()
        # Let the transports run their close callbacks before the loop goes.
        self._loop.run_until_complete(asyncio.sleep(0))
        for timer, done in self._lost.values():
            timer.cancel()
            done()
        self._lost.clear()

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
