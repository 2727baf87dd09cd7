"""The command-to-commit latency: observed once per message, only when its transaction commits."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from pipelines.commit_latency import CommitLatency


def _histogram() -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    return Histogram("latency_seconds", "test", registry=registry, buckets=(0.5, 2)), registry


def _value(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None
    return value


def test_each_staged_message_is_observed_once_when_the_transaction_commits() -> None:
    histogram, registry = _histogram()
    latency = CommitLatency(histogram, clock=lambda: 100.0)
    latency.stage(99_000)  # produced 1 s before the commit
    latency.stage(99_750)
    latency.committed()
    latency.committed()  # nothing new staged: nothing observed again
    assert _value(registry, "latency_seconds_count") == 2
    assert _value(registry, "latency_seconds_sum") == 1.25


def test_aborted_messages_are_not_observed_until_their_retry_commits() -> None:
    histogram, registry = _histogram()
    now = [100.0]
    latency = CommitLatency(histogram, clock=lambda: now[0])
    latency.stage(99_000)
    latency.aborted()
    assert latency.pending == 0
    now[0] = 103.0
    latency.stage(99_000)  # the same message, consumed again
    latency.committed()
    assert _value(registry, "latency_seconds_count") == 1
    assert _value(registry, "latency_seconds_sum") == 4.0


def test_a_producer_clock_ahead_of_ours_records_zero_not_a_negative_latency() -> None:
    histogram, registry = _histogram()
    latency = CommitLatency(histogram, clock=lambda: 100.0)
    latency.stage(100_500)
    latency.committed()
    assert _value(registry, "latency_seconds_sum") == 0.0
