from __future__ import annotations

import json

from prometheus_client import REGISTRY

from pipelines.health import DATABASE_CHECK_SECONDS, Health
from pipelines.kafka_statistics import statistics_callback


def _stats(lag: dict[str, int], rebalances: int, broker_state: str = "UP") -> str:
    return json.dumps(
        {
            "brokers": {"127.0.0.1:9092/1": {"state": broker_state}},
            "topics": {
                "payment.commands": {
                    "partitions": {
                        **{
                            p: {"app_offset": 100 - n, "fetch_state": "active", "ls_offset": 100}
                            for p, n in lag.items()
                        },
                        "5": {"consumer_lag": -1, "fetch_state": "none"},
                        "-1": {"consumer_lag": -1},
                    }
                }
            },
            "cgrp": {"assignment_size": len(lag), "rebalance_cnt": rebalances},
        }
    )


def _value(name: str, labels: dict[str, str] | None = None) -> float | None:
    return REGISTRY.get_sample_value(name, labels or {})


def test_statistics_set_lag_assignment_and_count_rebalances() -> None:
    states: list[bool] = []
    record = statistics_callback(states.append)
    before = _value("payment_worker_rebalances_total") or 0.0

    record(_stats({"0": 12, "1": 0}, rebalances=1))
    record(_stats({"0": 3}, rebalances=3, broker_state="DOWN"))

    assert (
        _value("payment_worker_consumer_lag", {"topic": "payment.commands", "partition": "0"}) == 3
    )
    # Partitions no longer reported are dropped, not left at their last value.
    assert (
        _value("payment_worker_consumer_lag", {"topic": "payment.commands", "partition": "1"})
        is None
    )
    assert _value("payment_worker_partitions_assigned") == 1
    assert _value("payment_worker_rebalances_total") == before + 3
    assert states == [True, False]


def test_ready_only_when_running_with_kafka_and_database() -> None:
    now = [0.0]
    database = [True]
    health = Health(lambda: database[0], clock=lambda: now[0])
    assert health.readiness()[0] is False  # starting

    health.pipeline("running")
    health.kafka(True)
    assert health.readiness() == (True, {"pipeline": "running", "kafka": True, "database": True})

    database[0] = False
    assert health.readiness()[0] is True  # the last answer is reused for a few seconds
    now[0] += DATABASE_CHECK_SECONDS
    assert health.readiness()[0] is False

    database[0] = True
    now[0] += DATABASE_CHECK_SECONDS
    health.pipeline("backing_off")
    assert health.readiness() == (
        False,
        {"pipeline": "backing_off", "kafka": False, "database": True},
    )
