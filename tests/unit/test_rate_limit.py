"""The token bucket, Retry-After, the 429 pause and the rate limit of ``ResilientHttp``.

Time is a fake clock (sleeping advances it) and services are scripted ``HttpClient``s, so
every rule is checked by counting, never by waiting.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest
from prometheus_client import REGISTRY

from clients.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState
from clients.http import (
    HttpResponse,
    NoFreeConnection,
    ResilientHttp,
    ServiceUnavailable,
    TransportFailure,
)
from clients.rate_limit import MAX_PAUSE_SECONDS, Throttle, TokenBucket, parse_retry_after
from config.settings import HttpServiceSettings

EPOCH = 1_800_000_000.0  # wall-clock "now" for Retry-After dates
_names = itertools.count()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Advance the clock; ``slept`` lists the waits (tenacity's zero waits left out)."""
        with self._lock:
            if seconds:
                self.slept.append(seconds)
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- Retry-After -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), (" 3 ", 3.0), ("0", 0.0), ("1.5", 1.5), ("007", 7.0)],
)
def test_retry_after_in_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=EPOCH) == seconds


@pytest.mark.parametrize(
    "header",
    [
        formatdate(EPOCH + 30, usegmt=True),  # IMF-fixdate: "Fri, 15 Jan 2027 08:00:30 GMT"
        formatdate(EPOCH + 30, localtime=False).replace("-0000", "+0000"),
        formatdate(EPOCH + 30 + 3600).replace("-0000", "+0100"),  # another zone, same instant
        "Friday, 15-Jan-27 08:00:30 GMT",  # RFC 850, obsolete but allowed
        "Fri Jan 15 08:00:30 2027",  # asctime, UTC
    ],
)
def test_retry_after_as_an_http_date(header: str) -> None:
    assert formatdate(EPOCH + 30, usegmt=True) == "Fri, 15 Jan 2027 08:00:30 GMT"
    assert parse_retry_after(header, now=EPOCH) == pytest.approx(30.0)


def test_a_retry_after_date_in_the_past_means_no_wait() -> None:
    assert parse_retry_after(formatdate(EPOCH - 600, usegmt=True), now=EPOCH) == 0.0


@pytest.mark.parametrize(
    "header", [None, "", "soon", "-1", "1e3", "NaN", "inf", "1,5", "12 s", "Fri, 99 Foo 2027"]
)
def test_an_unusable_retry_after_says_nothing(header: str | None) -> None:
    assert parse_retry_after(header, now=EPOCH) is None


# --- Token bucket ------------------------------------------------------------------------------


def test_a_full_bucket_gives_a_burst_then_one_token_per_interval(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 3, clock=clock)
    starts = [bucket.reserve() for _ in range(6)]
    assert starts == pytest.approx([1000.0, 1000.0, 1000.0, 1000.1, 1000.2, 1000.3])


def test_an_idle_bucket_fills_up_to_its_burst_only(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.now += 60  # enough for 600 tokens; 3 are kept
    starts = [bucket.reserve() for _ in range(4)]
    assert starts == pytest.approx([1060.0, 1060.0, 1060.0, 1060.1])


def test_tokens_come_back_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(4, 1, clock=clock)
    assert bucket.reserve() == 1000.0
    clock.now += 0.25
    assert bucket.reserve() == 1000.25
    clock.now += 0.1
    assert bucket.reserve() == pytest.approx(1000.5)


def test_a_token_past_the_deadline_is_refused_and_not_taken(clock: FakeClock) -> None:
    bucket = TokenBucket(1, 1, clock=clock)
    assert bucket.reserve() == 1000.0
    assert bucket.reserve(deadline=1000.5) is None
    assert bucket.reserve(deadline=1000.5) is None
    assert bucket.reserve(deadline=1001.0) == 1001.0  # the refusals took nothing


def test_a_token_is_never_before_not_before(clock: FakeClock) -> None:
    bucket = TokenBucket(10, 2, clock=clock)
    starts = [bucket.reserve(not_before=1005.0) for _ in range(3)]
    assert starts == pytest.approx([1005.0, 1005.0, 1005.1])  # full, as it would be by then
    assert bucket.reserve(not_before=1005.0, deadline=1005.15) is None


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0)])
def test_a_bucket_needs_a_positive_rate_and_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"rate_per_second|burst"):
        TokenBucket(rate, burst)


def test_threads_share_the_bucket_without_losing_or_doubling_a_token(clock: FakeClock) -> None:
    """The clock stands still: 1000 reservations from 50 threads are exactly the schedule."""
    bucket = TokenBucket(100, 10, clock=clock)
    start = threading.Barrier(50)

    def reserve_twenty(_: int) -> list[float | None]:
        start.wait()
        return [bucket.reserve() for _ in range(20)]

    with ThreadPoolExecutor(50) as pool:
        starts = [s for batch in pool.map(reserve_twenty, range(50)) for s in batch]

    expected = [1000.0] * 10 + [1000.0 + n / 100 for n in range(1, 991)]
    assert sorted(s for s in starts if s is not None) == pytest.approx(expected)


# --- Throttle: the bucket and the 429 pause ----------------------------------------------------


def test_without_a_rate_only_pauses_hold_calls_back(clock: FakeClock) -> None:
    throttle = Throttle(0, 50, clock=clock)
    assert throttle.bucket is None
    assert [throttle.reserve() for _ in range(1000)] == [0.0] * 1000
    throttle.pause(2.5)
    assert throttle.reserve() == 2.5
    assert throttle.pause_remaining() == 2.5
    clock.now += 2.5
    assert throttle.reserve() == 0.0
    assert throttle.pause_remaining() == 0.0


def test_a_longer_pause_stands_and_a_pause_is_capped(clock: FakeClock) -> None:
    throttle = Throttle(0, 1, clock=clock)
    assert throttle.pause(10) == 1010.0
    assert throttle.pause(3) == 1010.0  # a shorter one does not shorten it
    assert throttle.pause(20) == 1020.0
    assert throttle.pause(10**9) == 1000.0 + MAX_PAUSE_SECONDS


def test_a_pause_past_the_deadline_is_refused_and_takes_no_token(clock: FakeClock) -> None:
    throttle = Throttle(1, 1, clock=clock)
    throttle.pause(5)
    assert throttle.reserve(deadline=1004.0) is None
    assert throttle.reserve(deadline=1005.0) == 5.0  # the token was still there
    assert throttle.reserve() == 6.0  # then one a second


def test_the_bucket_counts_from_the_end_of_the_pause(clock: FakeClock) -> None:
    throttle = Throttle(10, 2, clock=clock)
    throttle.pause(1)
    assert [throttle.reserve() for _ in range(3)] == pytest.approx([1.0, 1.0, 1.1])


# --- ResilientHttp: the rate limit before every attempt ----------------------------------------


def answer(status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status, headers or {}, b"{}")


class Service:
    """A scripted service (an ``HttpClient``): each request pops the next answer; then 200."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.answers: list[HttpResponse | TransportFailure] = []
        self.started_at: list[float] = []

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        self.started_at.append(self.clock.now)
        scripted = self.answers.pop(0) if self.answers else answer(200)
        if isinstance(scripted, HttpResponse):
            return scripted
        raise scripted


def make_http(
    service: Service,
    clock: FakeClock,
    *,
    sleep: Callable[[float], None] | None = None,
    **settings: float,
) -> ResilientHttp:
    fields: dict[str, float] = {
        "timeout_seconds": 2.0,
        "total_budget_seconds": 5.0,
        "retries": 3,
        "circuit_failure_threshold": 1,
    }
    config = HttpServiceSettings(base_url="https://service.test", **(fields | settings))
    return ResilientHttp(
        service,
        config,
        name=f"test_rate_limit_{next(_names)}",
        clock=clock,
        sleep=sleep or clock.sleep,
        wall_clock=lambda: EPOCH + (clock.now - 1000.0),
    )


def waits(http: ResilientHttp) -> tuple[float, float]:
    labels = {"service": http.name}
    count = REGISTRY.get_sample_value("payment_worker_rate_limit_waits_total", labels)
    seconds = REGISTRY.get_sample_value("payment_worker_rate_limit_wait_seconds_total", labels)
    return (count or 0.0, seconds or 0.0)


def too_many(retry_after: str) -> HttpResponse:
    return answer(429, {"Retry-After": retry_after})


def test_a_429_with_retry_after_is_retried_after_the_pause_without_back_off(
    clock: FakeClock,
) -> None:
    service = Service(clock)
    service.answers = [too_many("2")]
    http = make_http(service, clock)

    assert http.request("GET", "/thing").status_code == 200

    assert service.started_at == [1000.0, 1002.0]
    assert clock.slept == [2.0]  # the pause, and no back-off on top of it
    assert waits(http) == (1.0, 2.0)
    # The service answered: a 429 is not a failure that opens the circuit (threshold 1).
    assert http.breaker.state is CircuitState.CLOSED


def test_a_retry_after_date_is_honoured(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [too_many(formatdate(EPOCH + 3, usegmt=True))]
    http = make_http(service, clock)
    assert http.request("GET", "/thing").status_code == 200
    assert service.started_at == [1000.0, 1003.0]


def test_the_pause_holds_back_every_later_call(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [too_many("4")]
    http = make_http(service, clock, total_budget_seconds=3.0)
    with pytest.raises(ServiceUnavailable) as raised:
        http.request("GET", "/first")
    assert raised.value.reason == "rate_limited"

    clock.now += 1.5
    # Another call (any thread), whose budget has room: it waits out what is left first.
    assert http.request("GET", "/second").status_code == 200
    assert service.started_at == [1000.0, 1004.0]
    assert clock.slept == [2.5]


def test_a_retry_after_beyond_the_budget_fails_at_once_as_rate_limited(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [too_many("30")]
    http = make_http(service, clock, total_budget_seconds=5.0)

    with pytest.raises(ServiceUnavailable) as raised:
        http.request("GET", "/thing")
    assert raised.value.reason == "rate_limited"
    assert clock.slept == []  # no sleeping past the budget, nor into it
    assert clock.now == 1000.0

    # The pause still holds every call: refused at once, nothing sent.
    clock.now += 20
    with pytest.raises(ServiceUnavailable, match="rate_limited"):
        http.request("GET", "/thing")
    assert service.started_at == [1000.0]
    assert waits(http) == (0.0, 0.0)

    clock.now += 10
    assert http.request("GET", "/thing").status_code == 200


def test_a_pause_that_ends_within_the_budget_but_after_the_last_attempt_is_http_429(
    clock: FakeClock,
) -> None:
    service = Service(clock)
    service.answers = [too_many("1")]
    http = make_http(service, clock, retries=0)
    with pytest.raises(ServiceUnavailable) as raised:
        http.request("GET", "/thing")
    assert raised.value.reason == "http_429"
    assert clock.slept == []


@pytest.mark.parametrize("header", [None, "soon", "0"])
def test_a_429_without_a_usable_retry_after_backs_off_as_before(
    clock: FakeClock, header: str | None
) -> None:
    service = Service(clock)
    headers = {"Retry-After": header} if header is not None else {}
    service.answers = [answer(429, headers)]
    http = make_http(service, clock, circuit_failure_threshold=5)
    assert http.request("GET", "/thing").status_code == 200
    assert len(service.started_at) == 2
    assert len(clock.slept) == 1
    assert clock.slept[0] <= 0.1  # the first back-off step
    assert waits(http) == (0.0, 0.0)
    assert http.throttle.pause_remaining() == 0.0


def test_a_429_the_caller_takes_as_an_answer_still_pauses_the_others(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [too_many("2")]
    http = make_http(service, clock)
    assert http.request("GET", "/thing", retry_statuses=()).status_code == 429
    assert http.throttle.pause_remaining() == 2.0


def test_the_own_rate_limit_spaces_the_calls(clock: FakeClock) -> None:
    service = Service(clock)
    http = make_http(service, clock, rate_limit_per_second=10, rate_limit_burst=2)
    for _ in range(4):
        http.request("GET", "/thing")
    assert service.started_at == pytest.approx([1000.0, 1000.0, 1000.1, 1000.2])
    count, seconds = waits(http)
    assert count == 2
    assert seconds == pytest.approx(0.2)


def test_no_turn_within_the_budget_fails_at_once_and_sends_nothing(clock: FakeClock) -> None:
    service = Service(clock)
    http = make_http(
        service, clock, rate_limit_per_second=0.1, rate_limit_burst=1, total_budget_seconds=5
    )
    http.request("GET", "/thing")
    with pytest.raises(ServiceUnavailable, match="rate_limited"):
        http.request("GET", "/thing")  # the next token is 10 s away
    assert service.started_at == [1000.0]
    assert clock.slept == []


def test_a_pause_that_begins_while_a_call_waits_for_its_token_is_waited_for(
    clock: FakeClock,
) -> None:
    service = Service(clock)
    http: ResilientHttp

    def sleep_while_another_thread_gets_a_429(seconds: float) -> None:
        if not clock.slept:
            http.throttle.pause(1.0)
        clock.sleep(seconds)

    http = make_http(
        service,
        clock,
        sleep=sleep_while_another_thread_gets_a_429,
        rate_limit_per_second=10,
        rate_limit_burst=1,
    )
    http.request("GET", "/thing")
    http.request("GET", "/thing")  # waits 0.1 s for its token; the pause began meanwhile
    assert service.started_at == pytest.approx([1000.0, 1001.0])
    assert clock.slept == pytest.approx([0.1, 0.9])
    assert waits(http) == pytest.approx((1.0, 1.0))


def test_an_open_circuit_refuses_without_taking_a_token(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [answer(503)]
    http = make_http(service, clock, retries=0, rate_limit_per_second=1, rate_limit_burst=1)
    with pytest.raises(ServiceUnavailable, match="http_503"):
        http.request("GET", "/thing")
    clock.now += 1  # the one token is back
    with pytest.raises(CircuitOpen):
        http.request("GET", "/thing")
    assert clock.slept == []
    assert http.throttle.reserve() == 0.0  # still there


# --- Our own pool is not the service ------------------------------------------------------------


def test_a_pool_timeout_is_retried_and_not_counted_against_the_service(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [NoFreeConnection(), NoFreeConnection()]
    http = make_http(service, clock, circuit_failure_threshold=1)
    assert http.request("GET", "/thing").status_code == 200
    assert http.breaker.state is CircuitState.CLOSED


def test_a_half_open_trial_that_found_no_connection_hands_the_trial_on(clock: FakeClock) -> None:
    breaker = CircuitBreaker("test_pool", failure_threshold=1, reset_seconds=10, clock=clock)
    breaker.record_failure()
    clock.now += 10
    breaker.allow()  # the trial...
    assert breaker.is_refusing()
    breaker.record_not_sent()  # ...never reached the service
    assert not breaker.is_refusing()
    breaker.allow()  # the next call is the trial, at once
    assert breaker.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.allow()


def test_record_not_sent_changes_nothing_outside_a_trial(clock: FakeClock) -> None:
    breaker = CircuitBreaker("test_pool_2", failure_threshold=2, reset_seconds=10, clock=clock)
    breaker.record_failure()
    breaker.record_not_sent()
    breaker.record_failure()  # the second consecutive failure: the not-sent one did not count
    assert breaker.state is CircuitState.OPEN
    breaker.record_not_sent()
    assert breaker.is_refusing()


# --- What an answer tells the circuit breaker ---------------------------------------------


def test_a_busy_answer_is_retried_without_counting_against_the_service(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [answer(409), answer(409)]
    http = make_http(service, clock, circuit_failure_threshold=1)
    response = http.request("POST", "/thing", retry_statuses={409, 503}, busy_statuses={409})
    assert response.status_code == 200
    assert len(service.started_at) == 3
    assert http.breaker.state is CircuitState.CLOSED


def test_a_retried_status_that_is_not_busy_opens_the_circuit(clock: FakeClock) -> None:
    service = Service(clock)
    service.answers = [answer(409)]
    http = make_http(service, clock, circuit_failure_threshold=1)
    with pytest.raises(CircuitOpen):
        http.request("POST", "/thing", retry_statuses={409})
    assert http.breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_returned_and_count_as_failures(
    clock: FakeClock, status: int
) -> None:
    service = Service(clock)
    service.answers = [answer(status)]
    http = make_http(service, clock, circuit_failure_threshold=1)
    assert http.request("GET", "/thing").status_code == status
    assert len(service.started_at) == 1  # not retried within the call
    assert http.breaker.state is CircuitState.OPEN


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_final_answer_says_the_service_is_up(clock: FakeClock, status: int) -> None:
    service = Service(clock)
    service.answers = [answer(status)]
    http = make_http(service, clock, circuit_failure_threshold=1)
    assert http.request("GET", "/thing").status_code == status
    assert http.breaker.state is CircuitState.CLOSED
