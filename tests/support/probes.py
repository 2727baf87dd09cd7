"""HTTP to processes on loopback: one GET that never raises, and waiting until a worker
serves its ``/metrics`` or answers ``/readyz``.

The tools poll a worker while it starts, exits or is killed; a refused connection is an
answer (status 0) there, not an error.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from config.settings import Settings


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """The status and body of a GET; ``(0, "")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def wait_until_serving(
    settings: Settings, alive: Callable[[], bool], timeout: float = 90.0
) -> None:
    """Until the worker's metrics port answers: it has started and is joining its group.

    Sooner than ``/readyz``, which also waits for the first Kafka statistics (every
    ``kafka_statistics_interval_ms``, 5 s by default), while the worker is already busy.
    """
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited before it served its metrics")
        if http_get(url, timeout=2)[0] == 200:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the worker did not serve its metrics after {timeout} s")


def wait_until_ready(settings: Settings, alive: Callable[[], bool], timeout: float = 90.0) -> None:
    """Until the worker's /readyz answers 200."""
    url = f"http://127.0.0.1:{settings.metrics_port}/readyz"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the worker exited before it was ready")
        if http_get(url, timeout=2)[0] == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"the worker was not ready after {timeout} s")
