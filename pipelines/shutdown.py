"""Graceful shutdown on SIGTERM and SIGINT, within a bound.

On the first signal the running pipeline stops taking messages, commits its current
checkpoint (Postgres, then the Kafka transaction), closes its consumer (leaving the
group, so its partitions move at once) and the process exits 0. A pipeline that is
backing off after a dependency failure stops waiting. If all that takes longer than
the bound, the process exits with ``EXIT_SHUTDOWN_TIMEOUT`` without committing: the
uncommitted batch is redelivered to the next owner, so nothing is lost either way.
A second signal exits at once, the same way.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

from quixstreams import Application

logger = logging.getLogger(__name__)

EXIT_SHUTDOWN_TIMEOUT = 3


class GracefulShutdown:
    def __init__(self, timeout_seconds: float) -> None:
        self._timeout_seconds = timeout_seconds
        self._requested = threading.Event()
        self._app: Application | None = None

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def attach(self, app: Application) -> None:
        """Make ``app`` the pipeline a signal stops (replacing quixstreams' own handlers,
        which would stop only the app that installed them, not a back-off between apps)."""
        app._setup_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._app = app
        if self.requested:
            app.stop()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a shutdown is requested."""
        return self._requested.wait(seconds)

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            logger.error("second %s: exiting without committing", name)
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
        if self._app is not None:
            self._app.stop()

    def _give_up(self) -> None:
        logger.error(
            "shutdown did not finish in time: exiting without committing; the uncommitted "
            "batch is redelivered to the next owner",
            extra={"timeoutSeconds": self._timeout_seconds},
        )
        logging.shutdown()
        os._exit(EXIT_SHUTDOWN_TIMEOUT)
