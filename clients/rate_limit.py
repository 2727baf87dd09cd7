"""When the next call to a service may start: our own rate limit, and the service's 429s.

Hundreds of threads call one service at once (``gateway_max_in_flight``), so both limits
are shared by every thread of the worker and cost one short lock per call:

- ``TokenBucket``: at most ``rate_limit_per_second`` calls started per second, with bursts
  of up to ``rate_limit_burst``;
- ``Throttle``: that bucket, plus the pause a ``429 Too Many Requests`` asked for with its
  ``Retry-After`` header (``parse_retry_after``): no call to the service starts before the
  pause ends, whichever thread received the 429.

A caller *reserves* its turn: it learns at once how long to wait (and waits without a
lock), or that its turn would come after its deadline, in which case nothing is taken and
it can fail at once instead of sleeping past its budget.

A small module of our own rather than a library: ``token-bucket`` has no lock on purpose
(its counts may race), reads ``time.monotonic`` directly and only answers yes or no;
``limits`` counts fixed or moving windows on the wall clock; ``pyrate-limiter`` keeps a log
of every call in its window and polls while blocking. None tells a caller how long its turn
is before it waits, which the time budget of a call needs.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

# A Retry-After longer than this is taken as this: a service that asks for an hour (or a
# malformed date far in the future) must not silence every call for that long; after
# this pause the next call asks again.
MAX_PAUSE_SECONDS = 300.0

_DELAY_SECONDS = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait, or ``None`` if it says nothing usable.

    Either delay-seconds (``120``; a decimal fraction is accepted too) or an HTTP-date
    (``Wed, 21 Oct 2026 07:28:00 GMT``), which is compared with ``now``, wall-clock seconds
    since the epoch. A date in the past means no wait (0.0). Not capped here: see
    ``Throttle.pause``.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELAY_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" or asctime's format: UTC both (RFC 5322, RFC 9110)
        when = when.replace(tzinfo=UTC)
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError):
        return None


class TokenBucket:
    """``rate_per_second`` tokens a second, at most ``burst`` saved up; one token per call.

    The bucket is kept as the one instant at which it will be full again (the "virtual
    scheduling" form of the algorithm, also known as GCRA): a call may take a token once
    that instant is at most ``burst - 1`` token intervals away. One float under one lock:
    no refill arithmetic, no thread, and a caller may reserve a token that is due only
    later. ``clock`` is monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (rate_per_second > 0 and math.isfinite(rate_per_second)):
            raise ValueError(f"rate_per_second must be a positive number (got {rate_per_second})")
        if burst < 1:
            raise ValueError(f"burst must be at least 1 (got {burst})")
        self.rate_per_second = rate_per_second
        self.burst = burst
        self._interval = 1.0 / rate_per_second
        self._saved_up = (burst - 1) * self._interval
        self._clock = clock
        self._lock = threading.Lock()
        self._full_at = -math.inf  # full from the start

    def reserve(self, *, not_before: float = -math.inf, deadline: float = math.inf) -> float | None:
        """Take one token; the time (on ``clock``) from which it may be used, or ``None``.

        The time is now if the bucket has a token, else when the next one comes, and never
        before ``not_before``. When that is after ``deadline``, no token is taken and the
        answer is ``None``. Tokens are handed out in the order of the calls, so threads
        that wait are served first come, first served.
        """
        with self._lock:
            now = self._clock()
            start = max(now, not_before, self._full_at - self._saved_up)
            if start > deadline:
                return None
            self._full_at = max(self._full_at, start) + self._interval
            return start


class Throttle:
    """The start of every call to one service: the token bucket and the 429 pause.

    ``rate_per_second`` 0 means no bucket: only the service's own pauses apply. One
    ``Throttle`` per service and worker process, shared by all its threads.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bucket = (
            TokenBucket(rate_per_second, burst, clock=clock) if rate_per_second > 0 else None
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._paused_until = -math.inf

    def pause(self, seconds: float) -> float:
        """No call starts for ``seconds`` from now (at most ``MAX_PAUSE_SECONDS``).

        A longer pause already in force stands. Returns the end of the pause in force.
        """
        seconds = min(max(seconds, 0.0), MAX_PAUSE_SECONDS)
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            return self._paused_until

    def paused_until(self) -> float:
        """When the pause in force ends (on ``clock``); in the past when there is none."""
        with self._lock:
            return self._paused_until

    def pause_remaining(self) -> float:
        """Seconds until the pause in force ends; 0.0 when there is none."""
        return max(0.0, self.paused_until() - self._clock())

    def reserve(self, *, deadline: float = math.inf) -> float | None:
        """Seconds to wait before the next call may start (its token taken), or ``None``.

        ``None`` when it could not start by ``deadline`` (on ``clock``): the pause lasts
        longer, or the bucket has no token for it until then. Nothing is taken then.
        """
        paused_until = self.paused_until()
        if paused_until > deadline:
            return None
        if self.bucket is None:
            return max(0.0, paused_until - self._clock())
        start = self.bucket.reserve(not_before=paused_until, deadline=deadline)
        if start is None:
            return None
        return max(0.0, start - self._clock())
