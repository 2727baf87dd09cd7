"""The profile cache, single-flight, stale-if-error, retries and circuit breaker.

The User Service is a scripted ``HttpClient`` and time is a fake clock (sleeping advances
it), so every rule is checked by counting calls, never by waiting.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import REGISTRY

from clients.circuit_breaker import CircuitBreaker, CircuitOpen, CircuitState
from clients.http import HttpResponse, ServiceUnavailable, TransportFailure
from clients.user_service import ProfileLookup
from config.settings import HttpServiceSettings, ProfileCacheSettings
from domain.errors import ProfileUnusable, TransientError
from domain.model import Profile

ADA = {"name": "Ada Lovelace", "email": "ada@example.test"}
TTL = 300.0
NEGATIVE_TTL = 30.0
STALE_IF_ERROR = 900.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclasses.dataclass(frozen=True)
class Sent:
    """One request as the scripted service received it."""

    method: str
    path: str
    timeout: float


Failure = int | Callable[[Sent], HttpResponse]


def answer(status: int, body: object = None, content: bytes = b"") -> HttpResponse:
    return HttpResponse(status, {}, json.dumps(body).encode() if body is not None else content)


class FakeUserService:
    """Answers ``GET /v1/users/{id}/profile`` from ``profiles``; can be told to fail.

    An ``HttpClient``: what ``ProfileLookup`` sends reaches ``send`` as is.
    """

    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, object]] = {"user-1": dict(ADA)}
        self.calls = 0
        self.timeouts: list[float] = []
        self.paths: list[str] = []
        # Each call pops the next scripted failure; an empty script answers normally.
        self.failures: list[Failure] = []
        self.always_fail: Failure | None = None
        self.gate: threading.Event | None = None
        self._lock = threading.Lock()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> HttpResponse:
        with self._lock:
            self.calls += 1
            self.paths.append(path)
            self.timeouts.append(timeout)
            failure = self.failures.pop(0) if self.failures else self.always_fail
        if self.gate is not None:
            self.gate.wait(5)
        if isinstance(failure, int):
            return answer(failure)
        if failure is not None:
            return failure(Sent(method, path, timeout))
        user_id = path.split("/")[3]
        if user_id in self.profiles:
            return answer(200, self.profiles[user_id])
        return answer(404, {"error": "user_not_found"})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def service() -> FakeUserService:
    return FakeUserService()


def make_lookup(
    service: FakeUserService,
    clock: FakeClock,
    *,
    retries: int = 0,
    failure_threshold: int = 5,
    budget: float = 5.0,
    max_entries: int = 100,
    negative_ttl: float = NEGATIVE_TTL,
) -> ProfileLookup:
    settings = HttpServiceSettings(
        base_url="https://user-service.test",
        timeout_seconds=2.0,
        total_budget_seconds=budget,
        retries=retries,
        circuit_failure_threshold=failure_threshold,
        circuit_reset_seconds=30.0,
    )
    cache = ProfileCacheSettings(
        ttl_seconds=TTL,
        negative_ttl_seconds=negative_ttl,
        stale_if_error_seconds=STALE_IF_ERROR,
        max_entries=max_entries,
    )
    return ProfileLookup(service, settings, cache, clock=clock, sleep=clock.advance)


@pytest.fixture
def lookup(service: FakeUserService, clock: FakeClock) -> ProfileLookup:
    return make_lookup(service, clock)


def lookups_counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value("payment_worker_profile_lookups_total", {"outcome": outcome})
    return value or 0.0


def state_of(breaker: CircuitBreaker) -> CircuitState:
    return breaker.state  # a call, so that mypy does not narrow the state across calls


def read_timeout(request: Sent) -> HttpResponse:
    raise TransportFailure("timeout")


def connection_refused(request: Sent) -> HttpResponse:
    raise TransportFailure("connect_error")


# --- Hits, misses and expiry ---------------------------------------------------------------


def test_a_profile_is_fetched_once_and_served_from_the_cache_until_its_ttl_ends(
    lookup: ProfileLookup, service: FakeUserService, clock: FakeClock
) -> None:
    misses, hits = lookups_counted("miss"), lookups_counted("hit")

    assert lookup.profile("user-1") == Profile(**ADA)
    clock.advance(TTL - 1)
    assert lookup.profile("user-1") == Profile(**ADA)
    assert service.calls == 1
    assert (lookups_counted("miss") - misses, lookups_counted("hit") - hits) == (1, 1)

    clock.advance(1)
    service.profiles["user-1"] = {"name": "Ada King", "email": "ada@example.test"}
    assert lookup.profile("user-1") == Profile("Ada King", "ada@example.test")
    assert service.calls == 2


def test_the_cache_keeps_at_most_max_entries_and_evicts_the_least_recently_used(
    service: FakeUserService, clock: FakeClock
) -> None:
    lookup = make_lookup(service, clock, max_entries=2)
    for user in ("user-a", "user-b", "user-c"):
        service.profiles[user] = dict(ADA)
    lookup.profile("user-a")
    lookup.profile("user-b")
    lookup.profile("user-a")  # a is now the most recently used
    lookup.profile("user-c")  # evicts b
    assert service.calls == 3
    assert REGISTRY.get_sample_value("payment_worker_profile_cache_entries") == 2

    lookup.profile("user-a")
    lookup.profile("user-c")
    assert service.calls == 3
    lookup.profile("user-b")
    assert service.calls == 4


def test_forget_drops_the_cached_profile(lookup: ProfileLookup, service: FakeUserService) -> None:
    lookup.profile("user-1")
    lookup.forget("user-1")
    lookup.profile("user-1")
    assert service.calls == 2


def test_the_user_id_cannot_escape_its_path_segment(
    lookup: ProfileLookup, service: FakeUserService
) -> None:
    assert lookup.profile("../admin?x=1#") is None
    assert service.paths == ["/v1/users/..%2Fadmin%3Fx%3D1%23/profile"]


# --- Single-flight -------------------------------------------------------------------------


def test_concurrent_misses_for_one_user_make_exactly_one_call(
    lookup: ProfileLookup, service: FakeUserService
) -> None:
    service.gate = threading.Event()
    threads = 20
    start = threading.Barrier(threads)

    def look_up(_: int) -> Profile | None:
        start.wait()
        return lookup.profile("user-1")

    with ThreadPoolExecutor(threads) as pool:
        answers = pool.map(look_up, range(threads))
        # Let the others pile up behind the one call in progress, then answer it. Whoever
        # comes late finds the profile cached: the count below holds either way.
        threading.Timer(0.2, service.gate.set).start()
        profiles = list(answers)

    assert service.calls == 1
    assert profiles == [Profile(**ADA)] * threads


def test_concurrent_lookups_share_the_failure_of_the_one_call(
    lookup: ProfileLookup, service: FakeUserService
) -> None:
    service.gate = threading.Event()
    service.always_fail = 503
    start = threading.Barrier(5)

    def look_up(_: int) -> str:
        start.wait()
        try:
            lookup.profile("user-1")
        except TransientError as error:
            return type(error).__name__
        return "answered"

    with ThreadPoolExecutor(5) as pool:
        answers = pool.map(look_up, range(5))
        threading.Timer(0.5, service.gate.set).start()
        outcomes = list(answers)

    assert outcomes == ["ServiceUnavailable"] * 5
    assert service.calls == 1


# --- 404: the user does not exist ----------------------------------------------------------


def test_a_404_is_remembered_for_the_negative_ttl(
    lookup: ProfileLookup, service: FakeUserService, clock: FakeClock
) -> None:
    negatives = lookups_counted("negative")
    assert lookup.profile("ghost") is None
    clock.advance(NEGATIVE_TTL - 1)
    assert lookup.profile("ghost") is None
    assert service.calls == 1
    assert lookups_counted("negative") - negatives == 2

    clock.advance(1)
    service.profiles["ghost"] = dict(ADA)  # the user signed up meanwhile
    assert lookup.profile("ghost") == Profile(**ADA)
    assert service.calls == 2


def test_a_zero_negative_ttl_remembers_no_404(service: FakeUserService, clock: FakeClock) -> None:
    lookup = make_lookup(service, clock, negative_ttl=0)
    assert lookup.profile("ghost") is None
    assert lookup.profile("ghost") is None
    assert service.calls == 2


def test_an_expired_404_is_never_served_stale(
    lookup: ProfileLookup, service: FakeUserService, clock: FakeClock
) -> None:
    assert lookup.profile("ghost") is None
    clock.advance(NEGATIVE_TTL)
    service.always_fail = 503
    with pytest.raises(TransientError):
        lookup.profile("ghost")


# --- Stale-if-error ------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [503, 500, read_timeout], ids=["503", "500", "timeout"])
def test_an_expired_profile_is_served_while_the_service_fails_within_the_bound(
    lookup: ProfileLookup,
    service: FakeUserService,
    clock: FakeClock,
    failure: Failure,
) -> None:
    lookup.profile("user-1")
    clock.advance(TTL + STALE_IF_ERROR - 1)
    service.always_fail = failure
    stale = lookups_counted("stale")

    assert lookup.profile("user-1") == Profile(**ADA)
    assert lookups_counted("stale") - stale == 1
    assert service.calls == 2  # it did ask first


def test_beyond_the_stale_bound_a_failure_is_a_transient_error(
    lookup: ProfileLookup, service: FakeUserService, clock: FakeClock
) -> None:
    lookup.profile("user-1")
    clock.advance(TTL + STALE_IF_ERROR)
    service.always_fail = 503
    errors = lookups_counted("error")

    with pytest.raises(TransientError):
        lookup.profile("user-1")
    assert lookups_counted("error") - errors == 1


def test_with_nothing_cached_an_outage_is_a_transient_error(
    lookup: ProfileLookup, service: FakeUserService
) -> None:
    service.always_fail = read_timeout
    with pytest.raises(TransientError, match="timeout"):
        lookup.profile("user-1")


def test_a_fresh_answer_after_the_outage_replaces_the_stale_one(
    lookup: ProfileLookup, service: FakeUserService, clock: FakeClock
) -> None:
    lookup.profile("user-1")
    clock.advance(TTL + 1)
    service.always_fail = 503
    lookup.profile("user-1")  # stale
    service.always_fail = None
    service.profiles["user-1"] = {"name": "Ada King", "email": "ada@example.test"}
    assert lookup.profile("user-1") == Profile("Ada King", "ada@example.test")


# --- What counts as transient --------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 409, 422])
def test_a_final_4xx_is_an_unusable_profile_not_retried_nor_cached(
    service: FakeUserService, clock: FakeClock, status: int
) -> None:
    lookup = make_lookup(service, clock, retries=3)
    service.always_fail = status
    with pytest.raises(ProfileUnusable, match=f"http_{status}") as raised:
        lookup.profile("user-1")
    assert not isinstance(raised.value, TransientError)
    assert service.calls == 1
    # The service answered: no reason to open the circuit.
    assert state_of(lookup.http.breaker) is CircuitState.CLOSED
    # Not remembered: the next lookup asks again (the profile may have been fixed).
    with pytest.raises(ProfileUnusable):
        lookup.profile("user-1")
    assert service.calls == 2


@pytest.mark.parametrize("status", [404, 410])
def test_not_found_and_gone_mean_no_such_user(
    service: FakeUserService, clock: FakeClock, status: int
) -> None:
    lookup = make_lookup(service, clock, retries=3)
    service.always_fail = status
    assert lookup.profile("user-1") is None


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_are_transient_and_count_as_breaker_failures(
    service: FakeUserService, clock: FakeClock, status: int
) -> None:
    lookup = make_lookup(service, clock, retries=3, failure_threshold=3)
    service.always_fail = status
    with pytest.raises(TransientError, match=f"http_{status}"):
        lookup.profile("user-1")
    assert service.calls == 1  # a rotation takes longer than one call's retries
    assert state_of(lookup.http.breaker) is CircuitState.CLOSED
    for _ in range(2):
        with pytest.raises(TransientError):
            lookup.profile("user-1")
    assert state_of(lookup.http.breaker) is CircuitState.OPEN


def test_an_unexpected_status_is_transient(service: FakeUserService, clock: FakeClock) -> None:
    lookup = make_lookup(service, clock, retries=3)
    service.always_fail = 301
    with pytest.raises(TransientError, match="http_301"):
        lookup.profile("user-1")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"name": "Ada"}',
        b'{"name": "Ada", "email": 42}',
        b'{"name": "Ada", "email": null}',
        b'{"email": "x"}',
    ],
)
def test_a_malformed_profile_is_unusable_and_its_body_is_not_repeated(
    lookup: ProfileLookup, service: FakeUserService, body: bytes
) -> None:
    service.always_fail = lambda request: answer(200, content=body)
    with pytest.raises(ProfileUnusable, match="malformed_profile") as raised:
        lookup.profile("user-1")
    assert "Ada" not in str(raised.value)
    assert raised.value.__cause__ is None


# --- Retries and the time budget -----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        429,
        500,
        502,
        503,
        504,
        read_timeout,
        connection_refused,
    ],
    ids=["429", "500", "502", "503", "504", "read-timeout", "connect-error"],
)
def test_transient_failures_are_retried(
    service: FakeUserService,
    clock: FakeClock,
    failure: Failure,
) -> None:
    lookup = make_lookup(service, clock, retries=3)
    service.failures = [failure, failure]
    assert lookup.profile("user-1") == Profile(**ADA)
    assert service.calls == 3


def test_retries_stop_after_the_configured_number(
    service: FakeUserService, clock: FakeClock
) -> None:
    lookup = make_lookup(service, clock, retries=3, budget=60)
    service.always_fail = 503
    with pytest.raises(TransientError, match="http_503"):
        lookup.profile("user-1")
    assert service.calls == 4


def test_retries_stay_within_the_total_budget(service: FakeUserService, clock: FakeClock) -> None:
    """Each attempt takes its whole timeout (2 s) on the fake clock; the budget is 5 s."""
    lookup = make_lookup(service, clock, retries=10, budget=5.0)
    started = clock.now

    def slow_timeout(request: Sent) -> HttpResponse:
        clock.advance(request.timeout)
        raise TransportFailure("timeout")

    service.always_fail = slow_timeout
    with pytest.raises(TransientError, match="timeout"):
        lookup.profile("user-1")

    # Two whole attempts, then the third gets only what is left of the budget.
    assert service.calls == 3
    assert service.timeouts[:2] == [2.0, 2.0]
    assert service.timeouts[2] <= 1.0
    assert clock.now - started <= 5.0 + 1e-9


# --- Circuit breaker -----------------------------------------------------------------------


def breaker_gauge() -> float | None:
    return REGISTRY.get_sample_value(
        "payment_worker_circuit_breaker_state", {"service": "user_service"}
    )


def test_the_circuit_opens_after_n_failures_and_closes_after_a_successful_trial(
    service: FakeUserService, clock: FakeClock
) -> None:
    lookup = make_lookup(service, clock, failure_threshold=3)
    service.always_fail = 503
    for _ in range(3):
        with pytest.raises(TransientError):
            lookup.profile("user-1")
    assert service.calls == 3
    assert state_of(lookup.http.breaker) is CircuitState.OPEN
    assert breaker_gauge() == 2

    # Open: refused at once, no call.
    with pytest.raises(CircuitOpen):
        lookup.profile("user-1")
    clock.advance(29)
    with pytest.raises(CircuitOpen):
        lookup.profile("user-1")
    assert service.calls == 3

    # After the reset time one trial goes through; it succeeds and closes the circuit.
    clock.advance(1)
    service.always_fail = None
    assert lookup.profile("user-1") == Profile(**ADA)
    assert service.calls == 4
    assert state_of(lookup.http.breaker) is CircuitState.CLOSED
    assert breaker_gauge() == 0


def test_a_failed_trial_opens_the_circuit_again(service: FakeUserService, clock: FakeClock) -> None:
    lookup = make_lookup(service, clock, failure_threshold=2)
    service.always_fail = 503
    for _ in range(2):
        with pytest.raises(TransientError):
            lookup.profile("user-1")
    clock.advance(30)
    with pytest.raises(ServiceUnavailable, match="http_503"):
        lookup.profile("user-1")  # the trial
    assert service.calls == 3
    with pytest.raises(CircuitOpen):
        lookup.profile("user-1")
    assert service.calls == 3


def test_an_open_circuit_still_serves_stale_profiles(
    service: FakeUserService, clock: FakeClock
) -> None:
    lookup = make_lookup(service, clock, failure_threshold=1)
    lookup.profile("user-1")
    clock.advance(TTL + 1)
    service.always_fail = 503
    assert lookup.profile("user-1") == Profile(**ADA)  # the call that opened the circuit
    assert lookup.profile("user-1") == Profile(**ADA)  # refused by the circuit, still served
    assert service.calls == 2


def test_retries_end_when_the_circuit_opens(service: FakeUserService, clock: FakeClock) -> None:
    lookup = make_lookup(service, clock, retries=5, failure_threshold=2, budget=60)
    service.always_fail = 503
    with pytest.raises(CircuitOpen):
        lookup.profile("user-1")
    assert service.calls == 2


def test_half_open_lets_exactly_one_trial_through(clock: FakeClock) -> None:
    breaker = CircuitBreaker("test", failure_threshold=1, reset_seconds=10, clock=clock)
    breaker.allow()
    breaker.record_failure()
    clock.advance(10)
    breaker.allow()  # the trial
    assert state_of(breaker) is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.allow()
    breaker.record_success()
    breaker.allow()
    assert state_of(breaker) is CircuitState.CLOSED


# --- Personal data -------------------------------------------------------------------------


def test_only_name_and_email_are_kept(lookup: ProfileLookup, service: FakeUserService) -> None:
    service.profiles["user-1"] = {
        **ADA,
        "phone": "+44 20 7946 0000",
        "address": {"city": "London"},
        "dateOfBirth": "1815-12-10",
    }
    profile = lookup.profile("user-1")
    assert profile is not None
    assert [field.name for field in dataclasses.fields(profile)] == ["name", "email"]
    assert not hasattr(profile, "__dict__")  # nothing else can hide on it


def test_a_profile_does_not_show_itself() -> None:
    profile = Profile(**ADA)
    for text in (repr(profile), str(profile), f"{profile}", repr([profile])):
        assert "Ada" not in text
        assert "example.test" not in text


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends_without_user_ids(
    lookup: ProfileLookup,
    service: FakeUserService,
    clock: FakeClock,
    logs: pytest.LogCaptureFixture,
) -> None:
    service.always_fail = 503
    for user in ("user-1", "user-2", "user-3"):
        with pytest.raises(TransientError):
            lookup.profile(user)
    service.always_fail = None
    lookup.profile("user-1")
    lookup.profile("user-2")

    messages = [r.getMessage() for r in logs.records if r.name == "clients.user_service"]
    assert len(messages) == 2
    assert "unavailable (http_503)" in messages[0]
    assert "available again" in messages[1]
    assert "3 lookups" in messages[1]
    everything = " ".join(f"{r.getMessage()} {r.__dict__}" for r in logs.records)
    assert "user-" not in everything
    assert "Ada" not in everything
