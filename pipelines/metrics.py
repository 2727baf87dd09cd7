"""Every Prometheus metric of the worker, in one place.

Label values are bounded (command types, outcomes, reason codes), never user ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, Info

BUILD_INFO = Info("payment_worker_build", "Version of the running worker.")

COMMANDS = Counter(
    "payment_worker_commands_total",
    "Commands processed, by command type and result status.",
    ["type", "status"],
)
DEAD_LETTERS = Counter(
    "payment_worker_dead_letters_total",
    "Messages sent to the dead-letter topic, by reason code.",
    ["reason"],
)
REPLAYED_OUTCOMES = Counter(
    "payment_worker_replayed_outcomes_total",
    "Redelivered commands whose stored outcome was re-emitted instead of re-decided.",
)
CHECKPOINT_COMMANDS = Histogram(
    "payment_worker_checkpoint_commands",
    "Commands written to PostgreSQL per checkpoint transaction.",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000),
)
CHECKPOINT_WRITE_SECONDS = Histogram(
    "payment_worker_checkpoint_write_seconds",
    "Duration of the PostgreSQL transaction of one checkpoint.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
