"""The User Service profile lookup (``GET /v1/users/{userId}/profile``), behind a cache.

A last resort, never the normal path: commands should carry the customer's name and
email. When one does not and a gateway needs them, the worker asks here. The rules:

- 200 → the profile (name and email only; every other field is dropped at once);
  404 or 410 → ``None``, the user does not exist (the caller rejects the command);
  another 4xx but 401, 403, 408, 425 and 429, or a 200 whose body is not a usable profile
  (``"email": null``, not JSON) → ``ProfileUnusable``: asking again gets the same answer,
  so the caller rejects the command with a reason the producer can act on (send the
  ``customer`` in the command, or fix the profile); logged by reason only, never the body;
  anything else (5xx, 401/403: credentials may be mid-rotation, timeouts, other statuses)
  → ``TransientError``: the command waits and is retried, never dead-lettered.
- Profiles are cached for ``ttl_seconds`` (at most ``max_entries``, least recently used
  evicted first) and 404s for ``negative_ttl_seconds``. Concurrent misses for one user
  make one call (single-flight): DESIGN.md §6 allows one call per user per TTL.
- While the User Service fails, an expired profile younger than ``ttl_seconds +
  stale_if_error_seconds`` is served rather than holding the command up (stale-if-error).
  A remembered 404 is never served stale: rejecting a command is final.

Profiles live in memory only: never stored in Postgres, never logged, never in events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from cachetools import LRUCache
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clients.http import HttpClient, ResilientHttp, ServiceUnavailable
from config.settings import HttpServiceSettings, ProfileCacheSettings
from domain.errors import ProfileUnusable, TransientError
from domain.model import Profile
from telemetry.metrics import ADVERSE_ANSWERS, PROFILE_CACHE_ENTRIES, PROFILE_LOOKUPS

SERVICE_NAME = "user_service"
# A profile is two short strings; anything much larger is not a profile.
_MAX_BODY_BYTES = 64 * 1024

_log = logging.getLogger(__name__)

# How a lookup ended: the label of payment_worker_profile_lookups_total.
LookupOutcome = Literal["hit", "miss", "negative", "stale", "error", "unusable"]
# The user is not there.
_NOT_FOUND_STATUSES = frozenset({404, 410})
# 4xx that say "not now" (or "not with these credentials") rather than "never".
_PASSING_4XX_STATUSES = frozenset({401, 403, 408, 425, 429})


class _ProfileBody(BaseModel):
    """What is kept of the answer: other fields are ignored (data minimisation)."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=1000)
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")


@dataclass(frozen=True, slots=True)
class _Entry:
    profile: Profile | None  # None: the user does not exist (a remembered 404)
    fresh_until: float
    usable_until: float  # while the User Service fails (stale-if-error)


class _Flight:
    """One lookup in progress; concurrent lookups of the same user wait for its answer."""

    __slots__ = ("done", "error", "failure", "outcome", "profile", "store", "unusable")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.profile: Profile | None = None
        self.outcome: LookupOutcome = "error"
        self.error: TransientError | None = None  # raised as is by the leader
        self.unusable: ProfileUnusable | None = None  # raised by the leader and followers
        self.failure = "lookup_failed"  # the reason given to followers
        self.store = True  # False once forget() ran: an erased user's answer is not cached


class _Outage:
    """Counts while the User Service is unavailable, for the one "recovered" log line."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.failed_lookups = 0
        self.stale_served = 0


class ProfileLookup:
    """Cached, single-flight, stale-if-error profile lookups; safe to call from threads.

    ``http`` is built by ``clients.http.build_http_client(settings.user_service)``;
    ``clock`` (monotonic seconds) and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        http: HttpClient,
        service: HttpServiceSettings,
        cache: ProfileCacheSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._http = ResilientHttp(http, service, name=SERVICE_NAME, clock=clock, sleep=sleep)
        self._settings = cache
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: LRUCache[str, _Entry] = LRUCache(maxsize=cache.max_entries)
        self._flights: dict[str, _Flight] = {}
        # A follower waits at most as long as the leader's whole lookup may take.
        self._follow_seconds = service.total_budget_seconds + service.timeout_seconds
        self._outage: _Outage | None = None
        PROFILE_CACHE_ENTRIES.set(0)

    @property
    def http(self) -> ResilientHttp:
        """The retrying client, with its circuit breaker (``http.breaker.state``)."""
        return self._http

    def profile(self, user_id: str) -> Profile | None:
        """The user's profile; ``None`` if the User Service says the user does not exist.

        Raises ``TransientError`` when the User Service cannot answer and nothing usable
        is cached, ``ProfileUnusable`` when its answer can never be a profile.
        """
        if not user_id:
            raise ValueError("a guest has no profile")
        with self._lock:
            entry = self._entries.get(user_id)
            if entry is not None and self._clock() < entry.fresh_until:
                return self._counted(
                    entry.profile, "hit" if entry.profile is not None else "negative"
                )
            flight = self._flights.get(user_id)
            if flight is None:
                flight = self._flights[user_id] = _Flight()
                leading = True
            else:
                leading = False
        if leading:
            self._lead(user_id, flight)
            outcome = flight.outcome
        else:
            if not flight.done.wait(self._follow_seconds):
                PROFILE_LOOKUPS.labels(outcome="error").inc()
                raise ServiceUnavailable(SERVICE_NAME, "concurrent_lookup_timed_out")
            # Fetched for us by the leader: no call of our own, so a hit.
            outcome = "hit" if flight.outcome == "miss" else flight.outcome
        if outcome == "unusable" and flight.unusable is not None:
            PROFILE_LOOKUPS.labels(outcome="unusable").inc()
            raise flight.unusable
        if outcome == "error":
            PROFILE_LOOKUPS.labels(outcome="error").inc()
            if leading and flight.error is not None:
                raise flight.error
            raise ServiceUnavailable(SERVICE_NAME, flight.failure)
        return self._counted(flight.profile, outcome)

    def forget(self, user_id: str) -> None:
        """Drop the user's cached profile (EraseUserData), and any answer still in flight."""
        with self._lock:
            self._entries.pop(user_id, None)
            flight = self._flights.get(user_id)
            if flight is not None:
                flight.store = False
            PROFILE_CACHE_ENTRIES.set(len(self._entries))

    def _lead(self, user_id: str, flight: _Flight) -> None:
        """Ask the User Service, cache the answer, fall back to a stale profile on failure."""
        try:
            try:
                profile = self._fetch(user_id)
            except TransientError as error:
                reason = getattr(error, "reason", "error")
                self._unavailable(reason)
                self._serve_stale(user_id, flight, error, reason)
            except ProfileUnusable as unusable:
                # Not cached: the next command for this user asks again (it may be fixed).
                self._available()
                ADVERSE_ANSWERS.labels(SERVICE_NAME, "profile", "unusable_profile").inc()
                _log.warning(
                    "the User Service gave no usable profile; the command is rejected",
                    extra={"service": SERVICE_NAME, "reason": unusable.reason},
                )
                flight.unusable = unusable
                flight.outcome = "unusable"
            else:
                self._available()
                self._remember(user_id, flight, profile)
        finally:
            with self._lock:
                if self._flights.get(user_id) is flight:
                    del self._flights[user_id]
            flight.done.set()

    def _fetch(self, user_id: str) -> Profile | None:
        response = self._http.request(
            "GET",
            f"/v1/users/{quote(user_id, safe='')}/profile",
            headers={"Accept": "application/json"},
        )
        status = response.status_code
        if status in _NOT_FOUND_STATUSES:
            return None
        if 400 <= status < 500 and status not in _PASSING_4XX_STATUSES:
            raise ProfileUnusable(f"http_{status}")
        if status != 200:
            raise ServiceUnavailable(SERVICE_NAME, f"http_{status}")
        if len(response.content) > _MAX_BODY_BYTES:
            raise ProfileUnusable("malformed_profile")
        try:
            body = _ProfileBody.model_validate_json(response.content)
        except ValidationError:
            # The validation error quotes the input: personal data. Say nothing of it.
            raise ProfileUnusable("malformed_profile") from None
        return Profile(name=body.name, email=body.email)

    def _remember(self, user_id: str, flight: _Flight, profile: Profile | None) -> None:
        now = self._clock()
        with self._lock:
            flight.profile = profile
            flight.outcome = "miss" if profile is not None else "negative"
            if not flight.store:
                return
            if profile is not None:
                fresh_until = now + self._settings.ttl_seconds
                usable_until = fresh_until + self._settings.stale_if_error_seconds
                self._entries[user_id] = _Entry(profile, fresh_until, usable_until)
            elif self._settings.negative_ttl_seconds > 0:
                fresh_until = now + self._settings.negative_ttl_seconds
                self._entries[user_id] = _Entry(None, fresh_until, fresh_until)
            else:
                self._entries.pop(user_id, None)
            PROFILE_CACHE_ENTRIES.set(len(self._entries))

    def _serve_stale(
        self, user_id: str, flight: _Flight, error: TransientError, reason: str
    ) -> None:
        with self._lock:
            entry = self._entries.get(user_id)
            if (
                flight.store
                and entry is not None
                and entry.profile is not None
                and self._clock() < entry.usable_until
            ):
                flight.profile = entry.profile
                flight.outcome = "stale"
                if self._outage is not None:
                    self._outage.stale_served += 1
                return
            if entry is not None and self._clock() >= entry.usable_until:
                del self._entries[user_id]  # too old to ever serve again
                PROFILE_CACHE_ENTRIES.set(len(self._entries))
            flight.error = error
            flight.failure = reason
            flight.outcome = "error"

    def _counted(self, profile: Profile | None, outcome: LookupOutcome) -> Profile | None:
        PROFILE_LOOKUPS.labels(outcome=outcome).inc()
        return profile

    def _unavailable(self, reason: str) -> None:
        """Log the start of an outage once; afterwards only count (never a user id)."""
        with self._lock:
            starting = self._outage is None
            if self._outage is None:
                self._outage = _Outage(self._clock())
            self._outage.failed_lookups += 1
        if starting:
            _log.warning(
                "User Service unavailable (%s): serving cached profiles where allowed, "
                "other commands that need a profile wait",
                reason,
                extra={"service": SERVICE_NAME, "reason": reason},
            )

    def _available(self) -> None:
        """Log the end of an outage once, with what it cost."""
        with self._lock:
            outage, self._outage = self._outage, None
        if outage is not None:
            _log.info(
                "User Service available again after %.1f s: %d lookups could not reach it, "
                "%d of them served a stale profile",
                self._clock() - outage.started,
                outage.failed_lookups,
                outage.stale_served,
                extra={"service": SERVICE_NAME},
            )
