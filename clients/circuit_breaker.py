"""The circuit breaker of one service: after consecutive failures its calls are refused.

A failing service is left alone for a while instead of being hammered by every waiting
command (DESIGN.md §5.5). ``ResilientHttp`` (``clients.http``) asks the breaker before each
attempt and tells it what each answer says of the service; which answers are failures is
decided there. The state is the gauge ``payment_worker_circuit_breaker_state``.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable

from clients.errors import ServiceUnavailable
from telemetry.metrics import CIRCUIT_BREAKER_STATE

_log = logging.getLogger(__name__)


class CircuitOpen(ServiceUnavailable):
    """The circuit breaker refused the call without sending it."""

    def __init__(self, service: str) -> None:
        super().__init__(service, "circuit_open")


class CircuitState(enum.IntEnum):
    """The values of ``payment_worker_circuit_breaker_state``."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Stops calling a failing service for a while, then lets one trial call through.

    After ``failure_threshold`` consecutive failures it opens: calls are refused at once
    (``CircuitOpen``) for ``reset_seconds``. Then the next call is a trial (half-open);
    others are still refused. The trial's success closes the circuit, its failure opens it
    again for another ``reset_seconds``.

    A small class rather than pybreaker: pybreaker holds one lock for the whole wrapped
    call, so concurrent calls through one breaker would run one at a time, and it times the
    open state with the wall clock, which jumps and cannot be replaced in a test. Here the
    lock only guards state changes (a closed circuit's calls do not take it), and the clock
    is monotonic and injectable.
    """

    def __init__(
        self,
        service: str,
        *,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._threshold = failure_threshold
        self._reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._gauge = CIRCUIT_BREAKER_STATE.labels(service=service)
        self._gauge.set(CircuitState.CLOSED)

    @property
    def state(self) -> CircuitState:
        return self._state

    def is_refusing(self) -> bool:
        """True while ``allow()`` would refuse: open and not yet due a trial, or half-open
        with the trial under way. Changes nothing; a call checks it before it waits for its
        rate-limit turn, which a refused call need not take."""
        if self._is_closed():
            return False  # the common case: no lock for it
        with self._lock:
            if self._state is CircuitState.OPEN:
                return self._clock() - self._opened_at < self._reset_seconds
            return self._state is CircuitState.HALF_OPEN

    def allow(self) -> None:
        """Return if a call may go out now; raise ``CircuitOpen`` if not."""
        if self._is_closed():
            return
        with self._lock:
            if self._state is CircuitState.CLOSED:
                return
            if (
                self._state is CircuitState.OPEN
                and self._clock() - self._opened_at >= self._reset_seconds
            ):
                self._become(CircuitState.HALF_OPEN)
                return  # this caller makes the one trial call
        raise CircuitOpen(self.service)

    def record_success(self) -> None:
        if self._failures == 0 and self._is_closed():
            return  # nothing to change (racing a failure, it is as if it came after this)
        with self._lock:
            self._failures = 0
            if self._state is not CircuitState.CLOSED:
                self._become(CircuitState.CLOSED)

    def record_not_sent(self) -> None:
        """The call never reached the service (no free connection in our own pool in time).

        That says nothing of the service: no failure is counted, and a half-open trial that
        ends so is handed to the next call instead of leaving the circuit half-open, with
        every call refused, for good.
        """
        with self._lock:
            if self._state is CircuitState.HALF_OPEN:
                self._opened_at = self._clock() - self._reset_seconds
                self._state = CircuitState.OPEN
                self._gauge.set(CircuitState.OPEN)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            if self._state is CircuitState.HALF_OPEN or (
                self._state is CircuitState.CLOSED and self._failures >= self._threshold
            ):
                self._opened_at = self._clock()
                self._become(CircuitState.OPEN)

    def _is_closed(self) -> bool:
        """Read without the lock, by the calls of a closed circuit (nearly all calls): one
        attribute, read whole. A caller that sees another state takes the lock and looks
        again."""
        return self._state is CircuitState.CLOSED

    def _become(self, state: CircuitState) -> None:
        self._state = state
        self._gauge.set(state)
        if state is CircuitState.OPEN:
            _log.warning(
                "circuit opened: calls to %s refused for %.0f s",
                self.service,
                self._reset_seconds,
                extra={"service": self.service, "consecutive_failures": self._failures},
            )
        elif state is CircuitState.CLOSED:
            _log.info("circuit closed: calls to %s resumed", self.service)
