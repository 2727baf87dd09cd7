"""A small JSON-over-HTTP server on loopback, shared by the sandbox services."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

# (method, path, headers, body) -> (status, JSON answer)
Handle = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, Any]]]


def _handler(handle: Handle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Keep-alive, as real services do: a new TCP connection per call would make the
        # worker's benchmark measure connection set-up rather than the worker.
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle's algorithm the body would
        # wait for the client's delayed ACK (40 ms) on a kept-alive connection.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, answer = handle(self.command, self.path, dict(self.headers.items()), body)
            encoded = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = do_POST = do_DELETE = _serve  # noqa: N815 - http.server's naming

        def log_message(self, format: str, *args: Any) -> None:
            # Paths and bodies carry user ids and customer data: log nothing about them.
            return

    return Handler


class JsonServer:
    """Serves ``handle`` on a loopback port; in a background thread or in the foreground."""

    def __init__(self, handle: Handle, host: str, port: int) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(handle))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve_forever(self) -> None:
        self._server.serve_forever()
