"""The User Service client against a real HTTPS server on 127.0.0.1.

The server is the standard library's ``http.server`` behind ``ssl``, with certificates made
by ``trustme`` for each test module: real TLS handshakes, real client certificates, real
tokens checked by the server. It can also be told what to answer (a 429 with Retry-After,
an answer that comes late), for the rate limit and for calls from many threads at once.
No Kafka or PostgreSQL is needed.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import REGISTRY

from clients.auth import SignedJwtAuth
from clients.circuit_breaker import CircuitState
from clients.http import ResilientHttp, ServiceUnavailable, build_http_client
from clients.user_service import ProfileLookup
from config.settings import HttpServiceSettings, ProfileCacheSettings
from domain.errors import TransientError
from domain.model import Profile

ADA = {"name": "Ada Lovelace", "email": "ada@example.test", "phone": "+44 20 7946 0000"}
AUDIENCE = "user-service"
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


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def settings(base_url: str, **overrides: Any) -> HttpServiceSettings:
    fields: dict[str, Any] = {"timeout_seconds": 1.0, "total_budget_seconds": 2.0, "retries": 0}
    return HttpServiceSettings(base_url=base_url, **(fields | overrides))


def lookup_for(service: HttpServiceSettings) -> ProfileLookup:
    return ProfileLookup(build_http_client(service), service, CACHE)


# --- TLS -----------------------------------------------------------------------------------


def test_a_profile_is_fetched_over_tls_with_the_right_ca(
    server_tls: ssl.SSLContext, ca_file: Path
) -> None:
    with user_service(server_tls) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file))
        assert lookup.profile("user-1") == Profile("Ada Lovelace", "ada@example.test")
        assert lookup.profile("user-2") is None
    assert seen.paths == ["/v1/users/user-1/profile", "/v1/users/user-2/profile"]


def test_a_server_signed_by_another_ca_is_refused_before_any_request(
    server_tls: ssl.SSLContext, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with user_service(server_tls) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=other_ca, retries=3))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
    assert raised.value.reason == "tls_error"
    assert seen.paths == []


def test_a_certificate_for_another_host_is_refused_before_any_request(
    ca: trustme.CA, ca_file: Path
) -> None:
    elsewhere = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("user-service.example.test").configure_cert(elsewhere)
    with user_service(elsewhere) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
    assert raised.value.reason == "tls_error"
    assert seen.paths == []


def test_mtls_a_client_without_a_certificate_is_refused_and_one_with_it_accepted(
    ca: trustme.CA, ca_file: Path, tmp_path: Path
) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("payment-worker@example.test", common_name="payment-worker")
    certificate, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(certificate))
    client.private_key_pem.write_to_path(str(key))
    requiring = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(requiring)
    client_ca.configure_trust(requiring)
    requiring.verify_mode = ssl.CERT_REQUIRED

    with user_service(requiring) as (url, seen):
        anonymous = lookup_for(settings(url, ca_bundle=ca_file))
        with pytest.raises(TransientError):
            anonymous.profile("user-1")
        assert seen.paths == []

        identified = lookup_for(
            settings(url, ca_bundle=ca_file, client_certificate=certificate, client_key=key)
        )
        assert identified.profile("user-1") is not None
    assert seen.paths == ["/v1/users/user-1/profile"]
    presented = seen.client_certificates[0]
    assert presented is not None
    assert (("commonName", "payment-worker"),) in presented["subject"]


# --- Credentials ---------------------------------------------------------------------------


def test_the_bearer_token_comes_from_a_file_and_a_rotated_file_is_picked_up(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("token-one\n")
    valid = {"Bearer token-one"}
    with user_service(server_tls, authorize=lambda header: header in valid) as (url, seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file, bearer_token_file=token_file))
        assert lookup.profile("user-1") is not None

        # Rotation: the service accepts only the new token, the file is replaced.
        valid.clear()
        valid.add("Bearer token-two-rotated")
        token_file.write_text("token-two-rotated\n")
        stat = token_file.stat()
        os.utime(token_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        lookup.forget("user-1")
        assert lookup.profile("user-1") is not None
    assert seen.authorizations == ["Bearer token-one", "Bearer token-two-rotated"]


def test_a_refused_token_is_a_transient_error(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("revoked")
    with user_service(server_tls, authorize=lambda _: False) as (url, _seen):
        lookup = lookup_for(settings(url, ca_bundle=ca_file, bearer_token_file=token_file))
        with pytest.raises(TransientError, match="http_401"):
            lookup.profile("user-1")


def test_a_missing_token_file_is_refused_when_the_client_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bearer_token_file"):
        build_http_client(settings("https://127.0.0.1:1", bearer_token_file=tmp_path / "none"))


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def verifier(key: rsa.RSAPrivateKey, audience: str) -> Authorizer:
    """The server side: a valid RS256 JWT from the worker, for this audience."""

    def authorize(header: str | None) -> bool:
        if header is None or not header.startswith("Bearer "):
            return False
        try:
            jwt.decode(
                header.removeprefix("Bearer "),
                key.public_key(),
                algorithms=["RS256"],
                audience=audience,
                issuer="payment-worker",
                options={"require": ["exp", "iat", "aud", "iss"]},
            )
        except jwt.PyJWTError:
            return False
        return True

    return authorize


def test_a_jwt_signed_by_the_worker_verifies_at_the_server(
    server_tls: ssl.SSLContext, ca_file: Path, tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem(rsa_key))
    with user_service(server_tls, authorize=verifier(rsa_key, AUDIENCE)) as (url, seen):
        service = settings(
            url, ca_bundle=ca_file, jwt_signing_key_file=key_file, jwt_audience=AUDIENCE
        )
        assert lookup_for(service).profile("user-1") is not None

        elsewhere = service.model_copy(update={"jwt_audience": "another-service"})
        with pytest.raises(TransientError, match="http_401"):
            lookup_for(elsewhere).profile("user-1")
    token = seen.authorizations[0]
    assert token is not None
    claims = jwt.decode(token.removeprefix("Bearer "), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == service.jwt_ttl_seconds


def issued_at(token: str, key: rsa.RSAPrivateKey) -> int:
    """``iat`` of a token signed by ``key`` (verified), whatever the real time is."""
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["RS256"],
        audience=AUDIENCE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    return int(claims["iat"])


def test_the_jwt_is_reused_then_re_signed_before_expiry_and_after_key_rotation(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(pem(rsa_key))
    now = [1_800_000_000.0]
    auth = SignedJwtAuth(
        key_file,
        algorithm="RS256",
        audience=AUDIENCE,
        issuer="payment-worker",
        ttl_seconds=300,
        clock=lambda: now[0],
    )
    first = auth.token()
    now[0] += 200
    assert auth.token() == first
    now[0] += 50  # within a minute of expiry
    second = auth.token()
    assert issued_at(second, rsa_key) == issued_at(first, rsa_key) + 250

    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(pem(new_key))
    stat = key_file.stat()
    os.utime(key_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    rotated = auth.token()
    assert rotated != second
    assert issued_at(rotated, new_key) == issued_at(second, rsa_key)


@pytest.mark.parametrize("algorithm", ["ES256", "HS256"])
def test_the_other_algorithms_sign_too(tmp_path: Path, algorithm: str) -> None:
    key_file = tmp_path / "signing.key"
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
        key_file.write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        verifying: Any = private.public_key()
    else:
        key_file.write_text("a-shared-secret-of-at-least-32-bytes!\n")
        verifying = b"a-shared-secret-of-at-least-32-bytes!"
    auth = SignedJwtAuth(
        key_file, algorithm=algorithm, audience=AUDIENCE, issuer="payment-worker", ttl_seconds=60
    )
    claims = jwt.decode(auth.token(), verifying, algorithms=[algorithm], audience=AUDIENCE)
    assert claims["iss"] == "payment-worker"


def test_a_key_that_does_not_fit_the_algorithm_is_refused_when_the_client_is_built(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "signing.key"
    key_file.write_text("not a PEM key")
    service = settings("https://127.0.0.1:1", jwt_signing_key_file=key_file, jwt_audience=AUDIENCE)
    with pytest.raises(ValueError, match="jwt_signing_key_file") as raised:
        build_http_client(service)
    assert "not a PEM key" not in str(raised.value)


def test_a_missing_ca_bundle_is_refused_when_the_client_is_built(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ca_bundle"):
        build_http_client(settings("https://127.0.0.1:1", ca_bundle=tmp_path / "missing.pem"))


# --- Plain HTTP ----------------------------------------------------------------------------


def test_plain_http_to_loopback_is_refused_unless_allowed() -> None:
    with user_service(None) as (url, seen):
        with pytest.raises(ValueError, match="allow_plain_http_on_loopback"):
            build_http_client(settings(url))
        assert seen.paths == []

        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True))
        assert lookup.profile("user-1") is not None
    assert seen.paths == ["/v1/users/user-1/profile"]


@pytest.mark.parametrize(
    "base_url", ["http://localhost:8080", "http://127.8.9.10", "http://[::1]:8080"]
)
def test_every_loopback_address_may_be_allowed(base_url: str) -> None:
    build_http_client(settings(base_url, allow_plain_http_on_loopback=True)).close()


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user-service.internal",
        "http://10.0.0.7:8080",
        "http://192.168.1.20",
        "http://localhost.example.test",
        "http://[::2]",
    ],
)
def test_plain_http_elsewhere_is_always_refused(base_url: str) -> None:
    # Refused while building: no client exists, so no request can be sent.
    with pytest.raises(ValueError, match="refusing plain http://"):
        build_http_client(settings(base_url, allow_plain_http_on_loopback=True))


@pytest.mark.parametrize(
    "base_url",
    [
        "ftp://127.0.0.1",
        "https://user:secret@user-service.internal",
        "https://:secret@",
        "https://",
    ],
)
def test_other_unsafe_base_urls_are_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="base_url") as raised:
        build_http_client(settings(base_url))
    assert "secret" not in str(raised.value)


# --- What goes over the wire --------------------------------------------------------------


def test_a_redirect_is_an_answer_and_is_not_followed() -> None:
    def redirect(path: str) -> Answer:
        return 302, {}, {"Location": "/v1/users/user-1/profile"}

    with user_service(None, respond=redirect) as (url, seen):
        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True, retries=3))
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-2")
    assert raised.value.reason == "http_302"
    assert seen.paths == ["/v1/users/user-2/profile"]


def test_an_answer_later_than_the_timeout_is_a_timeout_within_the_budget() -> None:
    def late(path: str) -> Answer:
        time.sleep(2.0)
        return profile_of(path)

    with user_service(None, respond=late) as (url, seen):
        service = settings(
            url,
            allow_plain_http_on_loopback=True,
            timeout_seconds=0.3,
            total_budget_seconds=0.8,
            retries=5,
        )
        lookup = lookup_for(service)
        began = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            lookup.profile("user-1")
        elapsed = time.monotonic() - began
    assert raised.value.reason == "timeout"
    assert 1 < len(seen.paths) <= 3  # retried, as far as the budget goes
    assert elapsed < 0.8 + 0.3


def test_a_port_where_nothing_listens_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    lookup = lookup_for(settings(f"http://127.0.0.1:{port}", allow_plain_http_on_loopback=True))
    with pytest.raises(ServiceUnavailable) as raised:
        lookup.profile("user-1")
    assert raised.value.reason == "connect_error"


def test_proxies_and_netrc_from_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password from-netrc\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens: a proxy would fail
    with user_service(None) as (url, seen):
        lookup = lookup_for(settings(url, allow_plain_http_on_loopback=True))
        assert lookup.profile("user-1") is not None
    assert seen.authorizations == [None]


def test_the_base_url_path_and_the_quoted_user_id_reach_the_server_as_sent() -> None:
    with user_service(None) as (url, seen):
        lookup = lookup_for(settings(f"{url}/api/", allow_plain_http_on_loopback=True))
        assert lookup.profile("../admin?x=1#") is None
    assert seen.paths == ["/api/v1/users/..%2Fadmin%3Fx%3D1%23/profile"]


# --- Rate limit and calls from many threads ------------------------------------------------


def profile_of(path: str) -> Answer:
    """Every user exists: a profile made from the id in the path."""
    user_id = path.split("/")[3]
    return 200, {"name": f"Name {user_id}", "email": f"{user_id}@example.test"}, {}


def rate_limit_waited(service: str) -> tuple[float, float]:
    """How many waits for the rate limit the service's calls counted, and their seconds."""
    labels = {"service": service}
    waits = REGISTRY.get_sample_value("payment_worker_rate_limit_waits_total", labels)
    seconds = REGISTRY.get_sample_value("payment_worker_rate_limit_wait_seconds_total", labels)
    return (waits or 0.0, seconds or 0.0)


def wait_for_pause(http: ResilientHttp) -> None:
    deadline = time.monotonic() + 10
    while http.throttle.pause_remaining() <= 0:
        assert time.monotonic() < deadline, "no pause began"
        time.sleep(0.005)


def test_a_429_with_retry_after_pauses_the_calls_of_every_thread() -> None:
    lock = threading.Lock()
    limited_at: list[float] = []

    def first_429_then_profiles(path: str) -> Answer:
        with lock:
            first = not limited_at
            if first:
                limited_at.append(time.monotonic())
        if first:
            return 429, {"error": "too_many_requests"}, {"Retry-After": "1"}
        return profile_of(path)

    with user_service(None, respond=first_429_then_profiles) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, retries=2, total_budget_seconds=5.0
        )
        lookup = lookup_for(service)
        waits_before, seconds_before = rate_limit_waited("user_service")
        with ThreadPoolExecutor(21) as pool:
            first = pool.submit(lookup.profile, "user-0")
            wait_for_pause(lookup.http)  # the 429 has been answered
            # Twenty other threads call now, while the pause lasts.
            others = pool.map(lookup.profile, [f"user-{n}" for n in range(1, 21)])
            profiles = [first.result(), *others]
        waits_after, seconds_after = rate_limit_waited("user_service")

    assert profiles == [Profile(f"Name user-{n}", f"user-{n}@example.test") for n in range(21)]
    assert len(seen.arrived_at) == 22  # the 429, its retry and the twenty others
    # The pause began when the client read the 429, after the server sent it: no request
    # of any thread arrived before a second after that.
    assert min(seen.arrived_at[1:]) >= limited_at[0] + 1.0
    assert waits_after - waits_before == 21  # every call waited once
    assert seconds_after - seconds_before >= 0.9  # the first one almost the whole second


def test_a_retry_after_date_is_honoured() -> None:
    answered: list[float] = []

    def first_429_until_a_date(path: str) -> Answer:
        if answered:
            return profile_of(path)
        answered.append(time.monotonic())
        # An HTTP-date has whole seconds: 2 s from now is between 1 and 2 s away.
        return 429, {}, {"Retry-After": formatdate(time.time() + 2, usegmt=True)}

    with user_service(None, respond=first_429_until_a_date) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, retries=1, total_budget_seconds=5.0
        )
        assert lookup_for(service).profile("user-1") is not None
    assert len(seen.arrived_at) == 2
    assert seen.arrived_at[1] >= answered[0] + 0.9


def test_a_retry_after_beyond_the_budget_fails_at_once_and_holds_back_every_thread() -> None:
    def always_429(path: str) -> Answer:
        return 429, {"error": "too_many_requests"}, {"Retry-After": "120"}

    def reason_of(lookup: ProfileLookup, user_id: str) -> str:
        try:
            lookup.profile(user_id)
        except ServiceUnavailable as error:
            return error.reason
        return "answered"

    with user_service(None, respond=always_429) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, retries=3, total_budget_seconds=5.0
        )
        lookup = lookup_for(service)
        began = time.monotonic()
        first = reason_of(lookup, "user-0")
        with ThreadPoolExecutor(10) as pool:
            others = list(pool.map(reason_of, [lookup] * 10, [f"user-{n}" for n in range(1, 11)]))
        elapsed = time.monotonic() - began

    assert [first, *others] == ["rate_limited"] * 11
    assert len(seen.paths) == 1  # the others were refused without a request
    assert elapsed < 5.0  # nobody slept into, let alone past, the budget


def test_calls_from_a_thread_pool_run_at_once() -> None:
    calls, answer_seconds = 100, 0.2

    def slow_profile(path: str) -> Answer:
        time.sleep(answer_seconds)
        return profile_of(path)

    with user_service(None, respond=slow_profile) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, timeout_seconds=5.0, total_budget_seconds=10.0
        )
        lookup = ProfileLookup(build_http_client(service, max_connections=calls), service, CACHE)
        began = time.monotonic()
        with ThreadPoolExecutor(calls) as pool:
            profiles = list(pool.map(lookup.profile, [f"user-{n}" for n in range(calls)]))
        elapsed = time.monotonic() - began

    assert all(profile is not None for profile in profiles)
    assert len(seen.paths) == calls
    # One after the other, the calls would take 100 * 0.2 s = 20 s.
    assert elapsed < calls * answer_seconds / 2
    assert seen.most_in_progress > 1


def test_the_connection_pool_holds_as_many_calls_as_asked() -> None:
    """More calls at once than httpx's default pool of 100: the server answers only once
    all of them are in progress together, which needs a connection each."""
    calls = 150
    all_in = threading.Barrier(calls, timeout=10)

    def answer_when_all_are_in(path: str) -> Answer:
        try:
            all_in.wait()
        except threading.BrokenBarrierError:
            return 503, {"error": "the calls were not all in progress at once"}, {}
        return profile_of(path)

    with user_service(None, respond=answer_when_all_are_in) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, timeout_seconds=15.0, total_budget_seconds=20.0
        )
        lookup = ProfileLookup(build_http_client(service, max_connections=calls), service, CACHE)
        with ThreadPoolExecutor(calls) as pool:
            profiles = list(pool.map(lookup.profile, [f"user-{n}" for n in range(calls)]))

    assert all(profile is not None for profile in profiles)
    assert seen.most_in_progress == calls


def test_no_more_calls_are_in_progress_than_the_pool_has_connections() -> None:
    def slow_profile(path: str) -> Answer:
        time.sleep(0.1)
        return profile_of(path)

    with user_service(None, respond=slow_profile) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, timeout_seconds=5.0, total_budget_seconds=10.0
        )
        lookup = ProfileLookup(build_http_client(service, max_connections=10), service, CACHE)
        with ThreadPoolExecutor(30) as pool:
            profiles = list(pool.map(lookup.profile, [f"user-{n}" for n in range(30)]))

    assert all(profile is not None for profile in profiles)
    assert 1 < seen.most_in_progress <= 10
    # Waiting for a connection is not the service failing: the circuit stayed closed.
    assert lookup.http.breaker.state is CircuitState.CLOSED


def test_concurrent_lookups_of_one_user_make_one_call() -> None:
    def slow_profile(path: str) -> Answer:
        time.sleep(0.3)
        return profile_of(path)

    with user_service(None, respond=slow_profile) as (url, seen):
        service = settings(
            url, allow_plain_http_on_loopback=True, timeout_seconds=5.0, total_budget_seconds=10.0
        )
        lookup = ProfileLookup(build_http_client(service, max_connections=64), service, CACHE)
        with ThreadPoolExecutor(64) as pool:
            profiles = set(pool.map(lookup.profile, ["user-7"] * 64))

    assert profiles == {Profile("Name user-7", "user-7@example.test")}
    assert seen.paths == ["/v1/users/user-7/profile"]
