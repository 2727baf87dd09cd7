"""``python -m bench.http_client_cost``: the worker's CPU for one outbound HTTP call, by client.

Every gateway call costs the worker CPU in the thread that makes it, and with hundreds of
calls in flight that CPU, not the gateway's latency, bounds the worker. This measures one
``POST /v1/authorizations`` (a JSON body, an idempotency key, a JSON answer read) to the
sandbox gateway, made in different ways:

* ``httpx`` as the worker built it before (``json=``, a timeout per call), and with what a
  caller can save (the body encoded once, one ``httpx.Timeout``);
* a bare ``urllib3.HTTPConnectionPool.urlopen``;
* a bare ``http.client.HTTPConnection`` per thread: the floor of a pure-Python client;
* bare ``pycurl`` handles, one per connection;
* the full path of the worker, ``HttpGateway.authorize`` through ``ResilientHttp``
  (rate limit, breaker, tenacity, metrics): over httpx and over urllib3's pool as it was
  built before, over the libcurl client that ``build_http_client`` returns now, and over a
  client that sends nothing (what ``ResilientHttp`` itself costs).

The gateway runs in a child process, so the figure is this process's CPU time
(``time.process_time``, every thread of it) divided by the calls: with 1 thread, and with
``--threads`` threads (64 by default) each calling in a loop, as the worker's pool does.
Each figure is the median of ``--repeat`` passes. Absolute figures vary from machine to
machine; the ratios between the options much less.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import itertools
import json
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, cast

import httpx
import pycurl
import urllib3

from clients.gateway import HttpGateway
from clients.http import HttpClient, HttpResponse, ResilientHttp, build_http_client
from config.settings import GatewaySettings

PATH = "/v1/authorizations"
Call = Callable[[int], None]


@dataclass(frozen=True)
class Option:
    name: str
    # Builds the call for a gateway at this base URL and this many threads (pool size).
    build: Callable[[str, int], Call]


_run = itertools.count()


def _key(n: int) -> str:
    """A fresh idempotency key per call, so that every call creates an authorization."""
    return f"bench-{time.time_ns()}-{n}"


def _body(n: int) -> dict[str, object]:
    return {
        "reference": f"pay-{n:08d}",
        "amount": 4200,
        "currency": "EUR",
        "token": f"tok_bench_{n:08d}",
        "customer": None,
    }


def _check(status: int, answer: Any) -> None:
    if status != 201 or not isinstance(answer, dict) or answer.get("status") != "approved":
        raise RuntimeError(f"unexpected answer {status}")


# --- Bare libraries -------------------------------------------------------------------------


def _httpx_as_before(base_url: str, threads: int) -> Call:
    client = httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(2.0),
        limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
        follow_redirects=False,
        trust_env=False,
    )

    def call(n: int) -> None:
        response = client.request(
            "POST", PATH, json=_body(n), headers={"Idempotency-Key": _key(n)}, timeout=2.0
        )
        _check(response.status_code, response.json())

    return call


def _httpx_trimmed(base_url: str, threads: int) -> Call:
    client = httpx.Client(
        base_url=base_url,
        limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
        follow_redirects=False,
        trust_env=False,
    )
    timeout = httpx.Timeout(2.0)

    def call(n: int) -> None:
        body = json.dumps(_body(n), separators=(",", ":")).encode()
        response = client.request(
            "POST",
            PATH,
            content=body,
            headers={"Idempotency-Key": _key(n), "Content-Type": "application/json"},
            timeout=timeout,
        )
        _check(response.status_code, json.loads(response.content))

    return call


def _host_port(base_url: str) -> tuple[str, int]:
    url = urllib3.util.parse_url(base_url)
    if url.host is None or url.port is None:
        raise ValueError(base_url)
    return url.host, url.port


def _urllib3_pool(base_url: str, threads: int) -> Call:
    host, port = _host_port(base_url)
    pool = urllib3.HTTPConnectionPool(host, port, maxsize=threads, block=True, retries=False)

    def call(n: int) -> None:
        body = json.dumps(_body(n), separators=(",", ":")).encode()
        response = pool.urlopen(
            "POST",
            PATH,
            body=body,
            headers={"Idempotency-Key": _key(n), "Content-Type": "application/json"},
            retries=False,
            redirect=False,
            timeout=2.0,
            pool_timeout=2,
        )
        _check(response.status, json.loads(response.data))

    return call


def _http_client_per_thread(base_url: str, threads: int) -> Call:
    host, port = _host_port(base_url)
    local = threading.local()

    def call(n: int) -> None:
        connection: http.client.HTTPConnection | None = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, port, timeout=2.0)
        body = json.dumps(_body(n), separators=(",", ":")).encode()
        connection.request(
            "POST",
            PATH,
            body=body,
            headers={"Idempotency-Key": _key(n), "Content-Type": "application/json"},
        )
        response = connection.getresponse()
        _check(response.status, json.loads(response.read()))

    return call


def _pycurl_handles(base_url: str, threads: int) -> Call:
    handles: queue.LifoQueue[Any] = queue.LifoQueue()
    for _ in range(threads):
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.PROXY, "")
        handles.put(handle)
    url = base_url + PATH

    def call(n: int) -> None:
        body = json.dumps(_body(n), separators=(",", ":")).encode()
        handle = handles.get(timeout=2.0)
        received = bytearray()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.POSTFIELDS, body)
            handle.setopt(
                pycurl.HTTPHEADER,
                [f"Idempotency-Key: {_key(n)}", "Content-Type: application/json", "Expect:"],
            )
            handle.setopt(pycurl.WRITEFUNCTION, received.extend)
            handle.setopt(pycurl.TIMEOUT_MS, 2000)
            handle.perform()
            status = int(handle.getinfo(pycurl.RESPONSE_CODE))
        finally:
            handles.put(handle)
        _check(status, json.loads(bytes(received)))

    return call


# --- The worker's own path ---------------------------------------------------------------


class _HttpxClient:
    """``HttpClient`` over httpx, as ``build_http_client`` built it before."""

    def __init__(self, base_url: str, connections: int) -> None:
        self._client = httpx.Client(
            base_url=base_url,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            follow_redirects=False,
            trust_env=False,
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        response = self._client.request(
            method, path, content=body, headers=headers, timeout=timeout
        )
        return HttpResponse(response.status_code, response.headers, response.content)


class _Urllib3Client:
    """``HttpClient`` over a urllib3 pool, as ``build_http_client`` built it before."""

    def __init__(self, base_url: str, connections: int) -> None:
        host, port = _host_port(base_url)
        self._pool = urllib3.HTTPConnectionPool(
            host, port, maxsize=connections, block=True, retries=False
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        answer = self._pool.urlopen(
            method,
            path,
            body=body,
            headers={"User-Agent": "payment-worker", **headers},
            retries=False,
            redirect=False,
            timeout=timeout,
            pool_timeout=cast("int", timeout),
            preload_content=True,
        )
        return HttpResponse(answer.status, answer.headers, answer.data)


class _NothingSent:
    """``HttpClient`` that answers at once without sending anything."""

    def __init__(self) -> None:
        self._ids = itertools.count()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        answer = f'{{"id":"auth_{next(self._ids)}","status":"approved"}}'.encode()
        return HttpResponse(201, {}, answer)


def _through_the_worker(
    client: Callable[[GatewaySettings, int], HttpClient],
) -> Callable[[str, int], Call]:
    def build(base_url: str, threads: int) -> Call:
        service = GatewaySettings(base_url=base_url, allow_plain_http_on_loopback=True)
        # A fresh name per build: each ResilientHttp has its own circuit breaker gauge.
        http = ResilientHttp(client(service, threads), service, name=f"bench_{next(_run)}")
        gateway = HttpGateway(http)

        def call(n: int) -> None:
            answer = gateway.authorize(
                payment_id=f"pay-{n:08d}",
                amount=4200,
                currency="EUR",
                gateway_token=f"tok_bench_{n:08d}",
                idempotency_key=_key(n),
            )
            if not answer.approved:
                raise RuntimeError("declined")

        return call

    return build


OPTIONS = (
    Option("httpx.Client, as built before", _httpx_as_before),
    Option("httpx.Client, body and timeout made once", _httpx_trimmed),
    Option("urllib3.HTTPConnectionPool.urlopen", _urllib3_pool),
    Option("http.client, a connection per thread", _http_client_per_thread),
    Option("pycurl, a handle per connection", _pycurl_handles),
    Option(
        "worker path: ResilientHttp over httpx (before)",
        _through_the_worker(lambda service, threads: _HttpxClient(service.base_url, threads)),
    ),
    Option(
        "worker path: ResilientHttp over urllib3's pool (before)",
        _through_the_worker(lambda service, threads: _Urllib3Client(service.base_url, threads)),
    ),
    Option(
        "worker path: ResilientHttp over build_http_client (libcurl)",
        _through_the_worker(
            lambda service, threads: build_http_client(service, max_connections=threads)
        ),
    ),
    Option(
        "worker path: ResilientHttp, nothing sent",
        _through_the_worker(lambda service, threads: _NothingSent()),
    ),
)


# --- Measuring ----------------------------------------------------------------------------


@contextlib.contextmanager
def sandbox_gateway() -> Iterator[str]:
    """The sandbox gateway in a child process (its CPU is not ours); yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import sys\n"
        "from sandbox.gateway_server import SandboxGatewayServer\n"
        "SandboxGatewayServer('127.0.0.1', int(sys.argv[1])).serve_forever()\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or child.poll() is not None:
                    raise RuntimeError("the sandbox gateway did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait(10)


def _cpu_us_per_call(call: Call, threads: int, calls: int, numbers: Iterator[int]) -> float:
    """Process CPU per call while ``threads`` threads make ``calls`` calls between them."""
    per_thread = max(1, calls // threads)
    start = threading.Barrier(threads + 1)
    done = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def loop() -> None:
        mine = [next(numbers) for _ in range(per_thread)]
        start.wait()
        try:
            for n in mine:
                call(n)
        except BaseException as error:  # reported below, with the option's name
            errors.append(error)
        done.wait()

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.process_time()
    done.wait()
    spent = time.process_time() - began
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return spent / (per_thread * threads) * 1e6


def measure(
    option: Option,
    base_url: str,
    *,
    threads: int,
    calls: int,
    repeat: int,
    numbers: Iterator[int],
) -> float:
    call = option.build(base_url, threads)
    _cpu_us_per_call(call, threads, max(threads * 4, calls // 10), numbers)  # connect, warm up
    return statistics.median(_cpu_us_per_call(call, threads, calls, numbers) for _ in range(repeat))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser("python -m bench.http_client_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=3000, help="calls per pass (default 3000)")
    parser.add_argument("--threads", default="1,64,256", help="thread counts (default 1,64,256)")
    parser.add_argument("--repeat", type=int, default=3, help="passes per figure (median)")
    parser.add_argument("--only", default="", help="options whose name contains this")
    args = parser.parse_args(argv)
    thread_counts = [int(part) for part in args.threads.split(",")]
    numbers = itertools.count()
    print(
        f"Python {sys.version.split()[0]}, httpx {version('httpx')}, "
        f"urllib3 {version('urllib3')}, pycurl {version('pycurl')}; "
        f"µs of CPU per call (median of {args.repeat} passes of {args.calls} calls)"
    )
    header = "".join(
        f"{f'{count} thread' + ('s' if count > 1 else ''):>14}" for count in thread_counts
    )
    print(f"{'option':60}{header}")
    with sandbox_gateway() as base_url:
        for option in OPTIONS:
            if args.only not in option.name:
                continue
            figures = [
                measure(
                    option,
                    base_url,
                    threads=count,
                    calls=args.calls,
                    repeat=args.repeat,
                    numbers=numbers,
                )
                for count in thread_counts
            ]
            print(
                f"{option.name:60}" + "".join(f"{figure:14.0f}" for figure in figures), flush=True
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
