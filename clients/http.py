"""Outbound HTTP for every service client: the pooled client and the request engine.

The User Service and the payment gateway need the same guarantees (DESIGN.md §5.5, §7):
TLS unless the peer is this machine and a developer said so; credentials read from mounted
files so rotation needs no restart; a time budget per call from settings; transient failures
retried with jittered back-off; and a circuit breaker, so a failing service is left alone for
a while instead of being hammered by every waiting command. Each client then only says what
its answers mean.

This module builds a service's client (``build_http_client``) and runs its calls
(``ResilientHttp``: attempts, retries within the budget, what an answer says of the
service). What it puts together has a module each: the base URL and TLS policy
(``clients.endpoint_policy``), the credentials (``clients.auth``), the circuit breaker
(``clients.circuit_breaker``), the rate limit (``clients.rate_limit``), and the error a
call fails with, ``ServiceUnavailable`` (``clients.errors``), which the service clients
import from here.

The wire is libcurl (``clients.curl_client``: why, with figures, is in its docstring).
``ResilientHttp`` only needs ``HttpClient.send`` (``clients.wire``); tests give it a
scripted one.
"""

from __future__ import annotations

import json as json_codec
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import tenacity
from prometheus_client import Counter

from clients.auth import CredentialsUnavailable, build_auth
from clients.circuit_breaker import CircuitBreaker, CircuitOpen
from clients.curl_client import USER_AGENT, CurlHttpClient
from clients.endpoint_policy import checked_base_url, tls_context
from clients.errors import ServiceUnavailable
from clients.rate_limit import Throttle, parse_retry_after
from clients.wire import HttpClient, HttpResponse, NoFreeConnection, TransportFailure
from config.settings import HttpServiceSettings
from telemetry.metrics import (
    HTTP_ATTEMPTS,
    HTTP_CALL_SECONDS,
    RATE_LIMIT_WAIT_SECONDS,
    RATE_LIMIT_WAITS,
)

# What the service clients, the wiring and the benchmarks import from here; the wire's
# types are defined in ``clients.wire``, ``ServiceUnavailable`` in ``clients.errors``.
__all__ = [
    "BACKOFF_FIRST_SECONDS",
    "BACKOFF_MAX_SECONDS",
    "DEFAULT_MAX_CONNECTIONS",
    "RETRYABLE_STATUSES",
    "UNAUTHORIZED_STATUSES",
    "USER_AGENT",
    "CurlHttpClient",
    "HttpClient",
    "HttpResponse",
    "NoFreeConnection",
    "ResilientHttp",
    "ServiceUnavailable",
    "TransportFailure",
    "build_http_client",
    "encode_json",
]

_log = logging.getLogger(__name__)

# Statuses that say "not now" rather than "no": retried within the budget, and counted as
# failures by the circuit breaker.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# Refused credentials: returned to the caller (not retried within the call: a rotation takes
# longer), and counted as failures by the circuit breaker, so a worker whose credentials
# are wrong stops calling for ``circuit_reset_seconds`` instead of sending every call.
UNAUTHORIZED_STATUSES = frozenset({401, 403})
# Full-jitter exponential back-off between attempts: up to 0.1 s, 0.2 s, 0.4 s... at most
# 2 s, so a fleet of workers does not retry in lock-step.
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 2.0
# An attempt with less time than this left in the budget would only time out.
_MIN_ATTEMPT_SECONDS = 0.05
# For a client built without saying how many calls may run at once. A client that many
# threads share needs one connection per call that may run at once, or the extra calls
# queue for a free connection within their timeout.
DEFAULT_MAX_CONNECTIONS = 100


# --- Building the client -------------------------------------------------------------------


def build_http_client(
    service: HttpServiceSettings, *, max_connections: int = DEFAULT_MAX_CONNECTIONS
) -> CurlHttpClient:
    """A client for one service, or a ``ValueError`` naming what is wrong.

    Everything that can be checked is checked here, at start-up, rather than on the first
    command that needs the service: the URL scheme, the TLS files (loaded once) and the
    credentials.

    The client is shared by every thread that calls the service. ``max_connections`` is
    how many calls may be in flight at once: pass the number of calls that may run
    concurrently (``settings.gateway_max_in_flight``). Beyond it a call waits for a free
    connection, and a wait longer than its timeout fails it (``pool_timeout``). Each
    connection is kept alive between calls, so a burst does not close and reopen (with a
    TLS handshake each) most of its connections.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1 (got {max_connections})")
    url = checked_base_url(service)
    if url.scheme == "https":
        tls_context(service)  # the CA bundle and the client certificate load, or fail now
    auth = build_auth(service)
    return CurlHttpClient(url, service, max_connections=max_connections, auth=auth)


# --- Retries within a budget ---------------------------------------------------------------


class _AttemptFailed(Exception):
    """One attempt failed; ``retryable`` says whether another attempt may do better.

    ``paused``: the service said when to come back (a 429's Retry-After), so the pause it
    asked for replaces the back-off before the next attempt.
    """

    def __init__(self, reason: str, *, retryable: bool, paused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.paused = paused


@dataclass(frozen=True, slots=True)
class _Call:
    """One ``ResilientHttp.request``, as each of its attempts needs it."""

    method: str
    path: str
    body: bytes | None
    headers: Mapping[str, str]
    retry_statuses: Collection[int]
    busy_statuses: Collection[int]
    started: float


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON, byte for byte as httpx encoded ``json=`` bodies before: the
    gateway compares a repeated idempotency key's body with the first one's, so a call
    replayed by a newer worker must send the same bytes."""
    return json_codec.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


class ResilientHttp:
    """Calls one service: every attempt through its rate limit and its circuit breaker,
    transient failures retried with jittered exponential back-off, all within
    ``total_budget_seconds``. Safe to share between threads; meant to be, since its rate
    limit, pause and breaker are only right when every call to the service goes through
    one ``ResilientHttp``.

    At most ``retries + 1`` attempts; an attempt starts only if the budget has time for
    it, and its timeout is cut to what is left, so a call never outlives its budget by more
    than one socket operation. Before each attempt the call waits for its turn
    (``throttle``): a token of ``rate_limit_per_second``, and the end of any pause a 429's
    ``Retry-After`` asked for, whichever thread received it. A turn that would come after
    the budget fails the call at once (``rate_limited``), without sleeping. Only for
    idempotent requests (a GET, or a POST with an idempotency key): a timed-out attempt may
    have taken effect. ``client`` is built by ``build_http_client`` (or is a test's scripted
    ``HttpClient``); ``clock``, ``sleep`` and ``wall_clock`` (for Retry-After dates) are
    injectable so tests count attempts without waiting.
    """

    def __init__(
        self,
        client: HttpClient,
        service: HttpServiceSettings,
        *,
        name: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.name = name
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=service.circuit_failure_threshold,
            reset_seconds=service.circuit_reset_seconds,
            clock=clock,
        )
        self.throttle = Throttle(
            service.rate_limit_per_second, service.rate_limit_burst, clock=clock
        )
        self._max_attempts = service.retries + 1
        self._budget = service.total_budget_seconds
        self._attempt_timeout = service.timeout_seconds
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._duration = HTTP_CALL_SECONDS.labels(service=name)
        self._attempts: dict[str, Counter] = {}
        self._waits = RATE_LIMIT_WAITS.labels(service=name)
        self._wait_seconds = RATE_LIMIT_WAIT_SECONDS.labels(service=name)
        self._backoff = tenacity.wait_random_exponential(
            multiplier=BACKOFF_FIRST_SECONDS, max=BACKOFF_MAX_SECONDS
        )
        # One Retrying for every call: tenacity keeps a call's progress per thread, and
        # each call's own figures (its start) come with it, as the attempt's argument.
        self._retrying = tenacity.Retrying(
            stop=self._out_of_attempts_or_time,
            wait=self._backoff_unless_paused,
            retry=tenacity.retry_if_exception(
                lambda error: isinstance(error, _AttemptFailed) and error.retryable
            ),
            sleep=self._sleep,
            reraise=True,
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        json: object = None,
        headers: Mapping[str, str] | None = None,
        retry_statuses: Collection[int] = RETRYABLE_STATUSES,
        busy_statuses: Collection[int] = (),
    ) -> HttpResponse:
        """The first answer whose status is not in ``retry_statuses``, whatever it is.

        ``busy_statuses`` (a subset of ``retry_statuses``, e.g. a gateway's 409 "a request
        with this key is in progress") are retried too, but the service is answering: they
        are not failures for the circuit breaker.

        ``url`` is the path below the service's base URL, quoted; ``json`` (unless None)
        is sent as the body, encoded once for every attempt.

        Raises ``ServiceUnavailable`` (a ``TransientError``) when no such answer came within
        the attempts and the budget, or at once when the circuit is open, TLS failed or the
        rate limit leaves no turn within the budget (``rate_limited``).
        """
        started = self._clock()
        body: bytes | None = None
        sent = dict(headers) if headers is not None else {}
        if json is not None:
            body = encode_json(json)
            sent.setdefault("Content-Type", "application/json")
        call = _Call(method, url, body, sent, retry_statuses, busy_statuses, started)
        try:
            return self._retrying(self._attempt, call)
        except _AttemptFailed as failure:
            raise ServiceUnavailable(self.name, failure.reason) from failure.__cause__

    def _out_of_attempts_or_time(self, state: tenacity.RetryCallState) -> bool:
        if state.attempt_number >= self._max_attempts:
            return True
        call: _Call = state.args[0]
        elapsed = self._clock() - call.started
        return self._budget - elapsed - state.upcoming_sleep < _MIN_ATTEMPT_SECONDS

    def _backoff_unless_paused(self, state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failure, _AttemptFailed) and failure.paused:
            return 0.0  # the next attempt waits for the pause instead
        return self._backoff(state)

    def _count_attempt(self, outcome: str) -> None:
        counter = self._attempts.get(outcome)
        if counter is None:
            # A few fixed outcomes: looked up once each, not on every attempt.
            counter = self._attempts.setdefault(
                outcome, HTTP_ATTEMPTS.labels(service=self.name, outcome=outcome)
            )
        counter.inc()

    def _await_turn(self, started: float) -> None:
        """Wait for this attempt's turn, or fail it at once if the turn is beyond the budget.

        A pause may begin while we wait (another thread got a 429): then we wait for it too.
        """
        deadline = started + self._budget - _MIN_ATTEMPT_SECONDS
        delay = self.throttle.reserve(deadline=deadline)
        waited = 0.0
        while delay is not None and delay > 0:
            self._sleep(delay)
            waited += delay
            paused_until = self.throttle.paused_until()
            delay = None if paused_until > deadline else paused_until - self._clock()
        if waited > 0:
            self._waits.inc()
            self._wait_seconds.inc(waited)
        if delay is None:
            raise _AttemptFailed("rate_limited", retryable=False)

    def _pause_for(self, response: HttpResponse, started: float) -> bool | None:
        """Honour a 429's Retry-After: True if the pause ends within this call's budget,
        False if not, None if the answer asks for no pause (then it is a plain failure)."""
        if response.status_code != 429:
            return None
        seconds = parse_retry_after(response.headers.get("Retry-After"), now=self._wall_clock())
        if seconds is None or seconds <= 0:
            return None
        # Once per pause, not once per thread that got the 429 (racy, but only the log).
        starting = self.throttle.pause_remaining() <= 0
        paused_until = self.throttle.pause(seconds)
        if starting:
            _log.warning(
                "%s answered 429 with Retry-After: no call to it starts for %.1f s",
                self.name,
                paused_until - self._clock(),
                extra={"service": self.name, "retry_after_seconds": seconds},
            )
        return paused_until <= started + self._budget - _MIN_ATTEMPT_SECONDS

    def _attempt(self, call: _Call) -> HttpResponse:
        if self.breaker.is_refusing():
            raise CircuitOpen(self.name)  # without waiting for a turn, or taking one
        # The turn comes before allow(): a half-open trial must not be held up by the rate
        # limit, nor end without a request because its turn is beyond the budget.
        self._await_turn(call.started)
        self.breaker.allow()
        remaining = self._budget - (self._clock() - call.started)
        timeout = max(min(self._attempt_timeout, remaining), _MIN_ATTEMPT_SECONDS)
        began = time.perf_counter()
        try:
            response = self.client.send(
                call.method, call.path, body=call.body, headers=call.headers, timeout=timeout
            )
        except NoFreeConnection as error:
            # Every connection of our pool was busy: nothing reached the service.
            self._count_attempt("timeout")
            self.breaker.record_not_sent()
            raise _AttemptFailed("pool_timeout", retryable=True) from error
        except TransportFailure as error:
            self._duration.observe(time.perf_counter() - began)
            self._count_attempt(error.reason)
            self.breaker.record_failure()
            # A certificate problem does not pass within seconds; another attempt won't help.
            raise _AttemptFailed(error.reason, retryable=error.reason != "tls_error") from error
        except CredentialsUnavailable as error:
            self.breaker.record_failure()
            raise _AttemptFailed("credentials_unavailable", retryable=False) from error
        except BaseException:
            self.breaker.record_failure()  # never leave a half-open trial unresolved
            raise
        self._duration.observe(time.perf_counter() - began)
        self._count_attempt(f"{response.status_code // 100}xx")
        return self._judge(response, call)

    def _judge(self, response: HttpResponse, call: _Call) -> HttpResponse:
        """Tell the breaker what the answer says of the service; return it, or fail the
        attempt (retryable) when its status is one to retry."""
        status = response.status_code
        # Every call to the service pauses, whatever this caller makes of the answer.
        within_budget = self._pause_for(response, call.started)
        if within_budget is not None:
            # The service is up and says when to come back: the pause, not the breaker,
            # keeps the calls away meanwhile (hundreds of 429s must not open the circuit).
            self.breaker.record_success()
            if status not in call.retry_statuses:
                return response
            if not within_budget:
                raise _AttemptFailed("rate_limited", retryable=False)
            raise _AttemptFailed(f"http_{status}", retryable=True, paused=True)
        answering = status not in UNAUTHORIZED_STATUSES and (
            status not in call.retry_statuses or status in call.busy_statuses
        )
        if answering:
            self.breaker.record_success()
        else:
            self.breaker.record_failure()
        if status in call.retry_statuses:
            raise _AttemptFailed(f"http_{status}", retryable=True)
        return response
