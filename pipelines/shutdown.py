"""Graceful shutdown on SIGTERM and SIGINT, within a bound.

On the first signal the running pipeline stops taking messages, commits its current
batch (Postgres, then the Kafka transaction), closes its consumer (leaving the group, so
its partitions move at once) and the process exits 0. A pipeline that is backing off
after a dependency failure stops waiting. If all that takes longer than the bound, the
process exits with ``EXIT_SHUTDOWN_TIMEOUT`` without committing: the uncommitted batch
is redelivered to the next owner, so nothing is lost either way. A second signal exits
at once, the same way.

The signals are blocked in every thread and taken by one thread with ``sigwait``, so no
library's own signal handlers (quixstreams installs some in ``Application.run``) ever
run, and none needs replacing. ``install`` must therefore run before any other thread
starts: threads inherit the signal mask of the thread that starts them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Protocol

logger = logging.getLogger(__name__)

EXIT_SHUTDOWN_TIMEOUT = 3
_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Stoppable(Protocol):
    def stop(self) -> None: ...


class GracefulShutdown:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout_seconds = timeout_seconds
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._pipeline: Stoppable | None = None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def install(self) -> None:
        """Block SIGTERM and SIGINT here (and so in every thread started later) and take
        them in a thread of their own."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        threading.Thread(target=self._wait_for_signals, name="signals", daemon=True).start()

    def attach(self, pipeline: Stoppable) -> None:
        """Make ``pipeline`` the one a signal stops."""
        with self._lock:
            self._pipeline = pipeline
        if self.requested:
            pipeline.stop()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a shutdown is requested."""
        return self._requested.wait(seconds)

    def request(self, name: str) -> None:
        """What a signal does; callable directly (tests, embedding)."""
        if self.requested:
            logger.error("second %s: exiting without committing", name)
            logging.shutdown()
            os._exit(EXIT_SHUTDOWN_TIMEOUT)
        self._requested.set()
        logger.info(
            "%s received: committing the current batch and leaving the group",
            name,
            extra={"timeoutSeconds": self._timeout_seconds},
        )
        watchdog = threading.Timer(self._timeout_seconds, self._give_up)
        watchdog.daemon = True
        watchdog.start()
        with self._lock:
            pipeline = self._pipeline
        if pipeline is not None:
            pipeline.stop()

    def _wait_for_signals(self) -> None:
        while True:
            signum = signal.sigwait(_SIGNALS)
            self.request(signal.Signals(signum).name)

    def _give_up(self) -> None:
        logger.error(
            "shutdown did not finish in time: exiting without committing; the uncommitted "
            "batch is redelivered to the next owner",
            extra={"timeoutSeconds": self._timeout_seconds},
        )
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)
