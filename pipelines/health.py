"""Liveness and readiness for Kubernetes probes, served beside ``/metrics``.

- ``/healthz`` (liveness): the process is serving; restarting it would not help otherwise.
- ``/readyz`` (readiness): the pipeline is running (assigned or waiting for an assignment),
  a Kafka broker is reachable and PostgreSQL answers. Not ready while the pipeline backs
  off on an unavailable dependency, so dashboards and rollouts see it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from telemetry import metrics

# A database check per probe would load PostgreSQL for nothing; reuse an answer this long.
DATABASE_CHECK_SECONDS = 5.0


class Health:
    """What the probes answer; the pipeline loop and the Kafka statistics update it."""

    def __init__(
        self, database_reachable: Callable[[], bool], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._database_reachable = database_reachable
        self._clock = clock
        self._lock = threading.Lock()
        self._pipeline = "starting"
        self._kafka_up = False
        self._database_checked_at = -DATABASE_CHECK_SECONDS
        self._database_up = False

    def pipeline(self, state: str) -> None:
        """``running``, ``backing_off`` or ``stopping``."""
        with self._lock:
            self._pipeline = state
            if state != "running":
                self._kafka_up = False
        metrics.READY.set(0)

    def kafka(self, up: bool) -> None:
        with self._lock:
            self._kafka_up = up

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        now = self._clock()
        with self._lock:
            if now - self._database_checked_at >= DATABASE_CHECK_SECONDS:
                self._database_checked_at = now
                self._database_up = self._database_reachable()
            checks = {
                "pipeline": self._pipeline,
                "kafka": self._kafka_up,
                "database": self._database_up,
            }
        ready = (
            checks["pipeline"] == "running" and bool(checks["kafka"]) and bool(checks["database"])
        )
        metrics.READY.set(1 if ready else 0)
        return ready, checks


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return  # probes and scrapes every few seconds would drown the worker's own logs


def _json(start_response: Callable[..., Any], status: str, body: dict[str, Any]) -> list[bytes]:
    encoded = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json")])
    return [encoded]


def ops_app(health: Health) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return _json(start_response, "200 OK", {"alive": True})
        if path == "/readyz":
            ready, checks = health.readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            return _json(start_response, status, {"ready": ready, **checks})
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


def serve_ops(host: str, port: int, health: Health) -> WSGIServer:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` in a background thread."""
    server = make_server(
        host, port, ops_app(health), server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
