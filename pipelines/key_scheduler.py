"""Runs commands per key in offset order, with gateway calls concurrent across keys.

Each key's commands are a queue. The head of a queue is decided on the main thread (the
store is single-threaded); a decision that needs the gateway or the User Service runs
those calls on a bounded thread pool, and the key waits for them while every other key
goes on. When the calls answer, the decision is settled on the main thread and the
key's next command is taken. So a key's commands are applied strictly in order, and a
slow or unavailable dependency holds only the keys whose next command needs it.

A call that fails transiently (an outage, an open circuit, a timeout) holds its key
and is retried with back-off, with the same idempotency keys; nothing is dead-lettered
for it (DESIGN.md §5.5). ``run`` returns at its deadline, with the keys still waiting
carried to the next batch (docs/decisions/0009).
"""

from __future__ import annotations

import logging
import queue
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from domain.errors import TransientError
from domain.model import Decision
from pipelines.command_processor import Admitted, CommandProcessor, GatewayWork
from pipelines.records import IncomingMessage, OutgoingRecord
from telemetry import metrics

logger = logging.getLogger(__name__)

Finished = Callable[[IncomingMessage, list[OutgoingRecord]], None]

HOLD_FIRST_SECONDS = 0.5
HOLD_MAX_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Ready:
    """A message whose records are known already, waiting for its turn on its key."""

    message: IncomingMessage
    records: list[OutgoingRecord]


def _queue_key(message: IncomingMessage) -> str:
    # Keys are validated UTF-8 for commands; any bytes are fine to order by.
    return (message.key or b"").hex()


class KeyScheduler:
    def __init__(
        self,
        processor: CommandProcessor,
        *,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processor = processor
        self._max_in_flight = max_in_flight
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="calls")
        # Per Kafka key, not per stream key: a key's results, dead letters included, go
        # out in the order of its messages. (A user's and a guest payment's stream may
        # share a Kafka key; they then wait for each other, which costs only time.)
        self._queues: dict[str, deque[Admitted | Ready]] = {}
        # The head of a key's queue, decided, waiting for its calls: running, waiting for
        # a free slot, or waiting for its retry time after a transient failure.
        self._work: dict[str, GatewayWork] = {}
        self._running: dict[Future[Decision], tuple[str, GatewayWork]] = {}
        # Futures whose calls answered, in the order they did (put by the pool's threads).
        self._answered: queue.SimpleQueue[Future[Decision]] = queue.SimpleQueue()
        self._running_keys: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._attempts: dict[str, int] = {}
        # Ids that a waiting decision may create or change, and the key that holds them.
        self._claims: dict[str, str] = {}
        self._ready: dict[str, None] = {}  # keys that may advance, in arrival order
        self._blocked: set[str] = set()  # keys whose head names another key's claim

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    @property
    def carried(self) -> int:
        """Commands not finished yet, the waiting heads included."""
        return sum(len(queue) for queue in self._queues.values())

    def waiting(self) -> list[Admitted]:
        """Every command not decided yet (a key's head waiting for calls is decided)."""
        return [
            item
            for key, queue in self._queues.items()
            for index, item in enumerate(queue)
            if isinstance(item, Admitted) and not (index == 0 and key in self._work)
        ]

    @property
    def idle(self) -> bool:
        return not self._queues

    def add(self, admitted: Admitted) -> None:
        self._append(_queue_key(admitted.message), admitted)

    def add_ready(self, message: IncomingMessage, records: list[OutgoingRecord]) -> bool:
        """Queue the records of a message decided without its key's state (a dead letter,
        a refusal) behind the commands of its key that wait; False when none waits (the
        caller publishes them at once)."""
        key = _queue_key(message)
        if key not in self._queues:
            return False
        self._append(key, Ready(message, records))
        return True

    def _append(self, key: str, item: Admitted | Ready) -> None:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque((item,))
            self._ready[key] = None
        else:
            queue.append(item)

    def run(self, deadline: float, finished: Finished) -> None:
        """Advance every key until all are done or ``deadline`` (monotonic) passes."""
        try:
            while True:
                self._advance_ready(finished)
                self._start_calls()
                if not self._work and not self._ready:
                    return
                now = self._clock()
                if now >= deadline:
                    return
                retries = (at for k, at in self._retry_at.items() if k not in self._running_keys)
                wake = min(deadline, min(retries, default=deadline))
                if not self._running:
                    time.sleep(max(0.0, wake - now))
                    continue
                try:
                    future = self._answered.get(timeout=max(0.0, wake - now))
                except queue.Empty:
                    continue
                self._complete(future, finished)
                while True:  # every other answer that is in, before deciding more
                    try:
                        self._complete(self._answered.get_nowait(), finished)
                    except queue.Empty:
                        break
        finally:
            metrics.GATEWAY_CALLS_IN_FLIGHT.set(len(self._running))
            metrics.HELD_KEYS.set(len(self._retry_at))
            metrics.CARRIED_COMMANDS.set(self.carried)

    def drop(self, belongs: Callable[[IncomingMessage], bool]) -> None:
        """Forget the keys with a command for which ``belongs`` is true (partitions that
        were given up): their calls may still answer, and are then ignored."""
        for key in [k for k, q in self._queues.items() if any(belongs(a.message) for a in q)]:
            self._forget(key)
        metrics.CARRIED_COMMANDS.set(self.carried)

    def clear(self) -> None:
        """Forget everything (the batch is rewound to the last commit)."""
        for key in list(self._queues):
            self._forget(key)
        metrics.HELD_KEYS.set(0)
        metrics.CARRIED_COMMANDS.set(0)

    def close(self) -> None:
        self.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- internals ---------------------------------------------------------------------

    def _advance_ready(self, finished: Finished) -> None:
        while self._ready:
            key = next(iter(self._ready))
            del self._ready[key]
            self._advance(key, finished)

    def _advance(self, key: str, finished: Finished) -> None:
        """Take a key's commands until one needs calls, waits on a claim, or none is left."""
        queue = self._queues.get(key)
        while queue and key not in self._work:
            head = queue[0]
            if isinstance(head, Ready):
                queue.popleft()
                finished(head.message, head.records)
                continue
            if any(self._claims.get(claim, key) != key for claim in head.claims):
                self._blocked.add(key)
                return
            step = self._processor.begin(head)
            if isinstance(step, GatewayWork):
                self._work[key] = step
                for claim in head.claims:
                    self._claims[claim] = key
                return
            queue.popleft()
            finished(head.message, step)
        if not queue and key not in self._work:
            self._queues.pop(key, None)

    def _start_calls(self) -> None:
        now = self._clock()
        for key, work in self._work.items():
            if len(self._running) >= self._max_in_flight:
                break
            if key in self._running_keys or self._retry_at.get(key, now) > now:
                continue
            future = self._executor.submit(self._processor.complete, work)
            self._running[future] = (key, work)
            self._running_keys.add(key)
            future.add_done_callback(self._answered.put)
        metrics.GATEWAY_CALLS_IN_FLIGHT.set(len(self._running))

    def _complete(self, future: Future[Decision], finished: Finished) -> None:
        key, work = self._running.pop(future)
        if self._work.get(key) is not work:
            return  # the key was dropped (rewind or rebalance) while its calls ran
        self._running_keys.discard(key)
        try:
            decision = future.result()
        except TransientError as error:
            self._hold(key, error)
            return
        except Exception as error:
            records = self._processor.failed(work.admitted, f"unexpected {type(error).__name__}")
        else:
            records = self._processor.finish(work, decision)
        self._release(key, work)
        self._queues[key].popleft()
        self._ready[key] = None
        finished(work.admitted.message, records)

    def _hold(self, key: str, error: TransientError) -> None:
        attempts = self._attempts.get(key, 0)
        delay = min(HOLD_FIRST_SECONDS * 2**attempts, HOLD_MAX_SECONDS)
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        self._retry_at[key] = self._clock() + delay
        self._attempts[key] = attempts + 1
        if attempts == 0:
            logger.warning(
                "a dependency is unavailable; this key's commands wait and are retried",
                extra={"error": str(error), "errorType": type(error).__name__},
            )

    def _release(self, key: str, work: GatewayWork) -> None:
        """The key's head is done (or dropped): free its claims and wake who waited."""
        self._work.pop(key, None)
        self._retry_at.pop(key, None)
        self._attempts.pop(key, None)
        for claim in work.admitted.claims:
            if self._claims.get(claim) == key:
                del self._claims[claim]
        for blocked in self._blocked:
            self._ready[blocked] = None
        self._blocked.clear()

    def _forget(self, key: str) -> None:
        self._queues.pop(key, None)
        self._ready.pop(key, None)
        self._blocked.discard(key)
        self._running_keys.discard(key)
        work = self._work.get(key)
        if work is not None:
            self._release(key, work)
