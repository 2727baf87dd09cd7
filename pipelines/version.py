"""The worker's version and source commit, stamped on dead letters and metrics."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Set by the image build (Dockerfile ARG); a source checkout asks git instead.
COMMIT_VARIABLE = "PAYMENT_WORKER_BUILD_COMMIT"
_SOURCE_TREE = Path(__file__).resolve().parents[1]


def worker_version() -> str:
    try:
        return version("payment-worker")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0.0.0+source"


@cache
def build_commit() -> str:
    """The git commit the running code was built from, or "unknown"."""
    stamped = os.environ.get(COMMIT_VARIABLE, "").strip()
    if stamped:
        return stamped
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
            cwd=_SOURCE_TREE,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return completed.stdout.strip() or "unknown"
