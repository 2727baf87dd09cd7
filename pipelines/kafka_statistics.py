"""Consumer lag, assignment and rebalances, from librdkafka's statistics callback.

librdkafka reports per partition the consumer's position and the end of the log it may
read (for a read_committed consumer: the last stable offset), so the lag needs no extra
calls to the broker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from telemetry import metrics

logger = logging.getLogger(__name__)


def _lag(partition: dict[str, Any]) -> int | None:
    """How far this consumer's position is behind the readable end of a partition.

    None when the partition is not assigned here. The position, not the committed
    offset, is compared: under exactly-once the offsets are committed by the producer's
    transaction, and librdkafka's own ``consumer_lag`` (based on its commits) stays stale.
    The readable end of a read_committed consumer is the last stable offset.
    """
    if partition.get("fetch_state", "none") == "none":
        return None
    end = int(partition.get("ls_offset", 0))
    position = int(partition.get("app_offset", -1001))
    if position < 0:  # nothing consumed yet: all that is readable is behind
        position = int(partition.get("lo_offset", 0))
    return max(end - position, 0)


def statistics_callback(on_broker_state: Callable[[bool], None]) -> Callable[[str], None]:
    """A ``stats_cb`` for one consumer; ``on_broker_state(up)`` feeds readiness."""
    last_rebalance_count = 0

    def record(stats_json: str) -> None:
        nonlocal last_rebalance_count
        try:
            stats: dict[str, Any] = json.loads(stats_json)
        except ValueError:
            logger.warning("librdkafka sent statistics that are not JSON")
            return
        metrics.CONSUMER_LAG.clear()
        for topic, topic_stats in stats.get("topics", {}).items():
            for partition, partition_stats in topic_stats.get("partitions", {}).items():
                lag = _lag(partition_stats)
                if partition != "-1" and lag is not None:
                    metrics.CONSUMER_LAG.labels(topic=topic, partition=partition).set(lag)
        group = stats.get("cgrp", {})
        metrics.PARTITIONS_ASSIGNED.set(group.get("assignment_size", 0))
        rebalance_count = int(group.get("rebalance_cnt", 0))
        if rebalance_count > last_rebalance_count:
            metrics.REBALANCES.inc(rebalance_count - last_rebalance_count)
            last_rebalance_count = rebalance_count
        brokers = stats.get("brokers", {}).values()
        on_broker_state(any(broker.get("state") == "UP" for broker in brokers))

    return record
