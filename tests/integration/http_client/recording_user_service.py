"""A User Service on 127.0.0.1 that records what it received and can be told what to answer.

The server is the standard library's ``http.server``, behind ``ssl`` when a test gives it a
TLS context (certificates made by ``trustme``, see ``conftest.py``): real TLS handshakes,
real client certificates, real tokens checked by the server. It can also be told what to
answer (a 429 with Retry-After, an answer that comes late), for the rate limit and for calls
from many threads at once. No Kafka or PostgreSQL is needed.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from clients.http import build_http_client
from clients.user_service import ProfileLookup
from config.settings import HttpServiceSettings, ProfileCacheSettings

ADA = {"name": "Ada Lovelace", "email": "ada@example.test", "phone": "+44 20 7946 0000"}
CACHE = ProfileCacheSettings()

# Whether a request's Authorization header is good enough for the server.
Authorizer = Callable[[str | None], bool]
# What the server answers instead of its usual rules: status, body, extra headers. It is
# called in the request's own server thread, so it may take its time (a slow service).
Answer = tuple[int, dict[str, str], dict[str, str]]
Responder = Callable[[str], Answer]


@dataclass
class Seen:
    """What the server received: one entry per request that got past TLS."""

    paths: list[str] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    client_certificates: list[dict[str, Any] | None] = field(default_factory=list)
    # When each request arrived (time.monotonic), and the most requests in progress at once.
    arrived_at: list[float] = field(default_factory=list)
    in_progress: int = 0
    most_in_progress: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _UserServiceServer(ThreadingHTTPServer):
    # Hundreds of clients connect at once in the concurrency tests; the default backlog
    # of 5 would drop their SYNs and delay them by a retransmission (a second or more).
    request_queue_size = 1024
    seen: Seen
    authorize: Authorizer
    respond: Responder | None


class _Handler(BaseHTTPRequestHandler):
    server: _UserServiceServer

    def do_GET(self) -> None:
        seen = self.server.seen
        authorization = self.headers.get("Authorization")
        peer = getattr(self.connection, "getpeercert", None)
        with seen.lock:
            seen.paths.append(self.path)
            seen.authorizations.append(authorization)
            seen.client_certificates.append(peer() if peer is not None else None)
            seen.arrived_at.append(time.monotonic())
            seen.in_progress += 1
            seen.most_in_progress = max(seen.most_in_progress, seen.in_progress)
        answer: Answer
        try:
            if not self.server.authorize(authorization):
                answer = 401, {"error": "unauthorized"}, {}
            elif self.server.respond is not None:
                answer = self.server.respond(self.path)
            elif self.path == "/v1/users/user-1/profile":
                answer = 200, ADA, {}
            else:
                answer = 404, {"error": "user_not_found"}, {}
        finally:
            # Before the answer goes out: once the client has it, the client may send its
            # next request, which must not find this one still counted.
            with seen.lock:
                seen.in_progress -= 1
        self._answer(*answer)

    def _answer(
        self, status: int, body: dict[str, str], headers: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def user_service(
    tls: ssl.SSLContext | None,
    authorize: Authorizer = lambda _: True,
    respond: Responder | None = None,
) -> Iterator[tuple[str, Seen]]:
    """A User Service on an ephemeral port of 127.0.0.1; yields its base URL and what it saw.

    ``respond``, if given, answers every authorized request instead of the usual rules
    (``user-1`` is Ada, anyone else a 404).
    """
    server = _UserServiceServer(("127.0.0.1", 0), _Handler)
    server.seen = Seen()
    server.authorize = authorize
    server.respond = respond
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    scheme = "https" if tls is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", server.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def settings(base_url: str, **overrides: Any) -> HttpServiceSettings:
    """A service at ``base_url`` that gives up soon (1 s an attempt, 2 s a call, no retry)
    unless ``overrides`` say otherwise."""
    fields: dict[str, Any] = {"timeout_seconds": 1.0, "total_budget_seconds": 2.0, "retries": 0}
    return HttpServiceSettings(base_url=base_url, **(fields | overrides))


def lookup_for(service: HttpServiceSettings) -> ProfileLookup:
    """The profile lookup of ``service``, built as the worker builds it (default pool)."""
    return ProfileLookup(build_http_client(service), service, CACHE)


def profile_of(path: str) -> Answer:
    """Every user exists: a profile made from the id in the path."""
    user_id = path.split("/")[3]
    return 200, {"name": f"Name {user_id}", "email": f"{user_id}@example.test"}, {}
