"""The wire of every service client: libcurl (pycurl), one handle per connection.

Why libcurl and not a pure-Python client: a call's CPU is most of what a command costs
the worker, and with the hundreds of calls in flight that the batch pipeline keeps
(``gateway_max_in_flight``, 256), a pure-Python client's calls fight for the interpreter
lock. libcurl does the request, the TLS and the read in C with the lock released. Measured
with ``python -m bench.http_client_cost`` (µs of the worker's CPU per call, 1 / 64 / 256
threads): urllib3's pool 443 / 565 / about 1,000, ``http.client`` 201 / 268 / 936, pycurl
130 / 192 / 282. pycurl is curl's own Python binding, kept with libcurl, and ships wheels
with libcurl and OpenSSL inside, so a fresh machine needs no compiler.

What the handles are told once, so that nothing outside the settings changes where a
request goes or whom it trusts: no proxy (an empty proxy overrides the environment's),
no ``.netrc``, no redirect followed, only http and https, the peer's certificate and host
name checked against ``ca_bundle`` only (else the system's CAs), TLS 1.2 at least, the
client certificate when one is set.
"""

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Iterator, Mapping
from io import BytesIO

import pycurl
from urllib3 import HTTPHeaderDict

from clients.auth import TokenSource
from clients.endpoint_policy import BaseUrl
from clients.wire import HttpResponse, NoFreeConnection, TransportFailure
from config.settings import HttpServiceSettings

# Sent with every request, so that the service's logs say who called.
USER_AGENT = "payment-worker"

_TIMED_OUT = frozenset({pycurl.E_OPERATION_TIMEDOUT})
_NOT_CONNECTED = frozenset({pycurl.E_COULDNT_CONNECT, pycurl.E_COULDNT_RESOLVE_HOST})
_TLS_FAILED = frozenset(
    {
        pycurl.E_SSL_CONNECT_ERROR,
        pycurl.E_PEER_FAILED_VERIFICATION,
        pycurl.E_SSL_CERTPROBLEM,
        pycurl.E_SSL_CIPHER,
        pycurl.E_SSL_CACERT_BADFILE,
        pycurl.E_SSL_ISSUER_ERROR,
        pycurl.E_SSL_PINNEDPUBKEYNOTMATCH,
        pycurl.E_SSL_INVALIDCERTSTATUS,
    }
)


def failure_reason(code: int) -> str:
    """The ``TransportFailure`` reason of a libcurl error code."""
    if code in _TIMED_OUT:
        return "timeout"
    if code in _NOT_CONNECTED:
        return "connect_error"
    if code in _TLS_FAILED:
        return "tls_error"
    return "transport_error"


class CurlHttpClient:
    """Requests to one service, through up to ``max_connections`` libcurl handles (each
    keeps its connection alive between requests); shared by every thread.

    Built by ``clients.http.build_http_client``, which checks the address, TLS and
    credentials first. A call waits up to its timeout for a free handle, then fails
    ``NoFreeConnection`` (nothing sent). No retries of its own: ``ResilientHttp`` retries,
    within its budget. The credential is asked for on every request, so a rotated one is
    used from the next request on.
    """

    def __init__(
        self,
        url: BaseUrl,
        service: HttpServiceSettings,
        *,
        max_connections: int,
        auth: TokenSource | None = None,
    ) -> None:
        self._url = url
        self._auth = auth
        self._closed = threading.Event()
        self._free: queue.LifoQueue[pycurl.Curl] = queue.LifoQueue(max_connections)
        self._all: list[pycurl.Curl] = []
        for _ in range(max_connections):
            handle = _handle(url.scheme, service)
            self._all.append(handle)
            self._free.put(handle)

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        if self._closed.is_set():
            raise TransportFailure("transport_error")
        sent = [f"User-Agent: {USER_AGENT}", "Expect:"]
        sent.extend(f"{name}: {value}" for name, value in headers.items())
        if self._auth is not None:
            sent.append(f"Authorization: Bearer {self._auth.token()}")
        try:
            handle = self._free.get(timeout=timeout)
        except queue.Empty:
            raise NoFreeConnection() from None
        try:
            return _perform(
                handle,
                method=method,
                url=self._url.below(path),
                body=body,
                headers=sent,
                timeout=timeout,
            )
        finally:
            self._free.put(handle)

    def close(self) -> None:
        """Close every connection; a later request fails (``transport_error``)."""
        self._closed.set()
        for handle in self._all:
            handle.close()


def _handle(scheme: str, service: HttpServiceSettings) -> pycurl.Curl:
    handle = pycurl.Curl()
    handle.setopt(pycurl.NOSIGNAL, 1)  # timeouts without SIGALRM: we run in many threads
    handle.setopt(pycurl.PROXY, "")  # overrides http_proxy and friends
    handle.setopt(pycurl.NETRC, pycurl.NETRC_IGNORED)
    handle.setopt(pycurl.FOLLOWLOCATION, 0)
    handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
    if scheme == "https":
        handle.setopt(pycurl.SSL_VERIFYPEER, 1)
        handle.setopt(pycurl.SSL_VERIFYHOST, 2)
        handle.setopt(pycurl.SSLVERSION, pycurl.SSLVERSION_TLSv1_2)
        if service.ca_bundle is not None:
            handle.setopt(pycurl.CAINFO, str(service.ca_bundle))
            handle.unsetopt(pycurl.CAPATH)  # the bundle only, not libcurl's default path
        else:
            system = ssl.get_default_verify_paths()
            if system.cafile is not None:
                handle.setopt(pycurl.CAINFO, system.cafile)
            if system.capath is not None:
                handle.setopt(pycurl.CAPATH, system.capath)
        if service.client_certificate is not None and service.client_key is not None:
            handle.setopt(pycurl.SSLCERT, str(service.client_certificate))
            handle.setopt(pycurl.SSLKEY, str(service.client_key))
    return handle


def _perform(
    handle: pycurl.Curl,
    *,
    method: str,
    url: str,
    body: bytes | None,
    headers: list[str],
    timeout: float,
) -> HttpResponse:
    # Both written by libcurl through BytesIO.write (C), with no Python call per line.
    content = BytesIO()
    head = BytesIO()
    milliseconds = max(1, int(timeout * 1000))
    handle.setopt(pycurl.URL, url)
    handle.setopt(pycurl.HTTPHEADER, headers)
    handle.setopt(pycurl.TIMEOUT_MS, milliseconds)
    handle.setopt(pycurl.CONNECTTIMEOUT_MS, milliseconds)
    handle.setopt(pycurl.WRITEDATA, content)
    handle.setopt(pycurl.WRITEHEADER, head)
    if method == "GET" and body is None:
        handle.setopt(pycurl.HTTPGET, 1)
        handle.setopt(pycurl.CUSTOMREQUEST, None)
    else:
        handle.setopt(pycurl.POSTFIELDS, body or b"")
        handle.setopt(pycurl.CUSTOMREQUEST, None if method == "POST" else method)
    try:
        handle.perform()
    except pycurl.error as error:
        code = error.args[0] if error.args and isinstance(error.args[0], int) else -1
        raise TransportFailure(failure_reason(code)) from error
    status = handle.getinfo(pycurl.RESPONSE_CODE)
    return HttpResponse(status, RawHeaders(head.getvalue()), content.getvalue())


class RawHeaders(Mapping[str, str]):
    """An answer's headers, case-insensitive, parsed only if someone reads them (most
    callers read the status and the body only)."""

    __slots__ = ("_parsed", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._parsed: HTTPHeaderDict | None = None

    def _headers(self) -> HTTPHeaderDict:
        if self._parsed is None:
            parsed = HTTPHeaderDict()
            for line in self._raw.decode("iso-8859-1").split("\r\n"):
                if line.startswith("HTTP/"):
                    parsed = HTTPHeaderDict()  # a new answer (after a 1xx): its own only
                elif ":" in line:
                    name, value = line.split(":", 1)
                    parsed.add(name.strip(), value.strip())
            self._parsed = parsed
        return self._parsed

    def __getitem__(self, name: str) -> str:
        return self._headers()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers())

    def __len__(self) -> int:
        return len(self._headers())
