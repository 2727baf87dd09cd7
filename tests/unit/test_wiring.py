from __future__ import annotations

from config.settings import Settings
from pipelines.wiring import build_worker


def test_worker_builds_with_non_connection_librdkafka_properties() -> None:
    # quixstreams' connection config refuses producer/consumer tuning properties; the
    # wiring must route them to the clients instead of failing at start-up.
    app = build_worker(Settings(kafka_extra_config={"linger.ms": "5", "client.id": "w-1"}))
    assert app.config.producer_extra_config["linger.ms"] == "5"
    assert app.config.consumer_extra_config["client.id"] == "w-1"
    assert app.config.processing_guarantee == "exactly-once"
