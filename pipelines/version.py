"""The worker's version, stamped on dead letters and metrics."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def worker_version() -> str:
    try:
        return version("payment-worker")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+source"
