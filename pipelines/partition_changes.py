"""Tell the worker when its consumer gives partitions up.

The command store caches each key's state while this worker owns the key's partition.
Once a partition is revoked or lost, another worker may change those keys, so the cache
is dropped. Correctness does not rest on this (every checkpoint write is fenced on the
versions it read, see ``state.command_store``); without it, though, a partition that
comes back after a rebalance would meet its stale cache, fail its first checkpoint and
restart the pipeline, which is a rebalance more for everyone.

quixstreams has no public hook for this, so the app's revoke and lost callbacks are
wrapped; ``tests/integration/test_scaling.py`` (partitions moving back and forth under
load, with no pipeline restart) fails if that stops working.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quixstreams import Application


def on_partitions_given_up(app: Application, callback: Callable[[], None]) -> None:
    """Call ``callback`` after ``app`` commits and gives up partitions (revoked or lost)."""
    for name in ("_on_revoke", "_on_lost"):
        original = getattr(app, name)

        def given_up(*args: Any, _original: Callable[..., None] = original) -> None:
            _original(*args)
            callback()

        setattr(app, name, given_up)
