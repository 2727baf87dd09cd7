"""A 429's Retry-After, in seconds or as a date, pauses the calls of every thread until it
ends; one that ends beyond a call's budget fails the calls at once (``rate_limited``)
without sending them (``clients.rate_limit``)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

from prometheus_client import REGISTRY

from clients.http import ResilientHttp, ServiceUnavailable
from clients.user_service import ProfileLookup
from domain.model import Profile
from tests.integration.http_client.recording_user_service import (
    Answer,
    lookup_for,
    profile_of,
    settings,
    user_service,
)


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
