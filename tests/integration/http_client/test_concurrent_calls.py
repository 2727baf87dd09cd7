"""Calls from many threads at once: they run together, one connection each up to the pool's
size and no more (waiting for a connection is not a failure of the service, for the
circuit breaker), and concurrent lookups of one user make one call."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from clients.circuit_breaker import CircuitState
from clients.http import build_http_client
from clients.user_service import ProfileLookup
from domain.model import Profile
from tests.integration.http_client.recording_user_service import (
    CACHE,
    Answer,
    profile_of,
    settings,
    user_service,
)


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
