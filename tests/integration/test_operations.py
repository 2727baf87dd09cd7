"""The operator-facing commands: migrations, topics, sending, tailing, stopping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine, text

from config.kafka import librdkafka_config
from config.settings import ENV_PREFIX, Settings
from pipelines.wiring import command_consumer_config, command_producer_config
from sandbox.gateway_server import SandboxGatewayServer
from state.database import head_revision
from tests.factories import add_payment_method, command, encode
from tests.support.harness import (
    REPOSITORY,
    WorkerProcess,
    free_port,
    produce,
    read_topic,
    settings_environment,
)
from tests.support.metrics_text import metric_sample
from tests.support.probes import http_get


def _cli(settings: Settings, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
        **settings_environment(settings),
    }
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        cwd=REPOSITORY,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_db_upgrade_and_topics_create_are_idempotent(settings: Settings, engine: Engine) -> None:
    # The fixture already ran both once; a second run must change nothing and succeed.
    upgrade = _cli(settings, "db", "upgrade")
    topics = _cli(settings, "topics", "create")

    assert upgrade.returncode == 0, upgrade.stderr
    assert f"at revision {head_revision()}" in upgrade.stdout
    assert topics.returncode == 0, topics.stderr
    assert sorted(topics.stdout.split("\n")[:-1]) == sorted(
        f"{name}: exists"
        for name in (
            settings.topic_commands,
            settings.topic_events,
            settings.topic_results,
            settings.topic_dlq,
            settings.projection_dlq_topic(),
        )
    )
    metadata = AdminClient(librdkafka_config(settings)).list_topics(timeout=10)
    assert len(metadata.topics[settings.topic_events].partitions) == settings.topic_partitions
    with engine.connect() as connection:
        tables = connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
            {"s": settings.database_schema},
        ).scalars()
        assert list(tables) == [
            "alembic_version",
            "gateway_customers",
            "payment_methods",
            "payments",
            "processed_commands",
            "stream_sequences",
        ]


def test_worker_refuses_to_start_on_an_unmigrated_database(settings: Settings) -> None:
    unmigrated = settings.model_copy(update={"database_schema": "never_migrated_schema"})
    run = _cli(unmigrated, "run", "worker")
    assert run.returncode == 2
    assert "payment-worker db upgrade" in run.stderr


def test_send_waits_for_the_result_and_tail_shows_the_events(
    settings: Settings, worker: WorkerProcess
) -> None:
    sent = _cli(
        settings,
        "send",
        "--wait",
        "45",
        "add-payment-method",
        "--user-id",
        "user-cli",
        "--gateway-token",
        "tok_cli_00000001",
        "--last4",
        "1881",
        "--exp-month",
        "7",
        "--exp-year",
        "2031",
        "--fingerprint",
        "fp_cli_00000001",
    )
    assert sent.returncode == 0, sent.stderr + worker.log()
    sent_line, result_line = sent.stdout.strip().split("\n")
    result = json.loads(result_line)
    assert result["commandId"] == json.loads(sent_line)["sent"]
    assert result["status"] == "accepted"

    tail = _cli(settings, "events", "tail", "--from-beginning", "--max", "2", "--timeout", "20")
    events = [json.loads(line) for line in tail.stdout.strip().split("\n")]
    assert [e["value"]["type"] for e in events] == [
        "PaymentMethodAdded",
        "DefaultPaymentMethodChanged",
    ]
    assert events[0]["key"] == "user-cli"
    assert events[0]["value"]["payload"]["last4"] == "1881"


def test_sigterm_stops_the_worker_cleanly_after_committing(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    commands = [add_payment_method(f"user-term-{n}") for n in range(20)]
    produce(settings, [(c["userId"].encode(), encode(c)) for c in commands])
    read_topic(settings, settings.topic_results, expected=len(commands), settle=0)

    assert worker.stop() == 0, worker.log()
    assert "payment worker stopped" in worker.log()
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM processed_commands")).scalar()
    assert count == len(commands)


def test_worker_clients_take_librdkafka_tuning_properties(settings: Settings) -> None:
    # Tuning properties from kafka_extra_config reach the clients, and the pipeline's own
    # guarantees (read_committed, no auto-commit, transactions) cannot be lost to them.
    extra = {"linger.ms": "5", "client.id": "w", "max.poll.interval.ms": "60000"}
    tuned = settings.model_copy(update={"kafka_extra_config": extra})
    consumer = command_consumer_config(tuned, None)
    producer = command_producer_config(tuned, "payment-worker-test")
    assert producer["linger.ms"] == "5"
    assert consumer["client.id"] == "w"
    assert consumer["isolation.level"] == "read_committed"
    assert consumer["enable.auto.commit"] is False
    assert producer["transactional.id"].startswith("payment-worker-")
    # Both build real clients with these properties.
    Consumer(consumer).close()
    Producer(producer).flush(0)


def test_dead_letters_can_be_listed_and_replayed_safely(
    settings: Settings, engine: Engine, worker: WorkerProcess
) -> None:
    # A command an older worker version dead-lettered (say, before it knew the type),
    # and one whose body was withheld for card data.
    fixed = add_payment_method("user-replay", fingerprint="fp_replay_001")
    dead_letters = Producer(librdkafka_config(settings))
    dead_letters.produce(
        settings.topic_dlq,
        key=b"user-replay",
        value=encode(fixed),
        headers=[("dlq.reason", b"unknown_command_type"), ("traceparent", b"00-abc")],
    )
    dead_letters.produce(
        settings.topic_dlq,
        key=b"user-replay",
        value=b"",
        headers=[("dlq.reason", b"sensitive_data"), ("dlq.body.withheld", b"true")],
    )
    assert dead_letters.flush(10) == 0

    listed = _cli(settings, "dlq", "list")
    summaries = [json.loads(line) for line in listed.stdout.strip().split("\n")]
    assert [(s["reason"], s["bodyWithheld"]) for s in summaries] == [
        ("unknown_command_type", False),
        ("sensitive_data", True),
    ]
    assert "fp_replay_001" not in listed.stdout

    only_sensitive = _cli(settings, "dlq", "replay", "--reason", "sensitive_data")
    assert json.loads(only_sensitive.stdout) == {"replayed": 0, "withheld": 1, "dryRun": False}
    first = _cli(settings, "dlq", "replay", "--reason", "unknown_command_type")
    second = _cli(settings, "dlq", "replay", "--reason", "unknown_command_type")
    assert json.loads(first.stdout)["replayed"] == 1
    assert json.loads(second.stdout)["replayed"] == 1

    results = read_topic(settings, settings.topic_results, expected=2)
    events = read_topic(settings, settings.topic_events, expected=2)
    assert [r.json()["status"] for r in results] == ["accepted", "accepted"]
    assert results[0].json() == results[1].json()
    assert len(events) == 2, "a second replay publishes the stored result, no new events"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM payment_methods")).scalar() == 1


def test_metrics_and_probes_during_a_run(
    settings: Settings, tmp_path: Path, sandbox_gateway: SandboxGatewayServer
) -> None:
    port = free_port()
    observed = settings.model_copy(
        update={
            "metrics_port": port,
            "metrics_host": "127.0.0.1",
            "kafka_statistics_interval_ms": 500,
        }
    )
    worker = WorkerProcess(observed, tmp_path / "worker.log")
    worker.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while http_get(base + "/readyz")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http_get(base + "/readyz")[0] == 200, worker.log()
        assert http_get(base + "/healthz")[0] == 200

        commands = [add_payment_method(f"user-metrics-{n}") for n in range(5)]
        produce(observed, [(c["userId"].encode(), encode(c)) for c in commands])
        read_topic(observed, observed.topic_results, expected=5)
        time.sleep(1.5)  # one more statistics report
        _, text_metrics = http_get(base + "/metrics")
        assert (
            'payment_worker_commands_total{status="accepted",type="AddPaymentMethod"} 5.0'
            in text_metrics
        )
        assert "payment_worker_partitions_assigned 3.0" in text_metrics
        lag_sample = (
            rf'payment_worker_consumer_lag{{partition="\d+",topic="{observed.topic_commands}"}}'
        )
        lags = re.findall(lag_sample + r" (\S+)", text_metrics)
        assert [float(lag) for lag in lags] == [0.0, 0.0, 0.0]
        assert "payment_worker_checkpoint_write_seconds_count" in text_metrics
        assert metric_sample(text_metrics, "payment_worker_processing_latency_seconds_count") == 5
        assert (
            metric_sample(
                text_metrics, "payment_worker_kafka_transactions_total", 'outcome="committed"'
            )
            >= 1
        )
        build = re.search(
            r'payment_worker_build_info\{commit="([^"]+)",version="[^"]+"\} 1.0', text_metrics
        )
        assert build is not None, text_metrics
        assert re.fullmatch(r"[0-9a-f]{12}", build.group(1))

        # A gateway outage holds the key that needs the gateway; the worker stays ready
        # (its other keys flow) and says how many keys wait.
        sandbox_gateway.gateway.available = False
        payment = command(
            "InitiatePayment",
            None,
            {
                "paymentId": "pay-probe",
                "orderId": "o",
                "amount": 100,
                "currency": "EUR",
                "gatewayToken": "tok_probe_000001",
            },
        )
        produce(observed, [(b"pay-probe", encode(payment))])
        deadline = time.monotonic() + 30
        held = 0.0
        while held < 1 and time.monotonic() < deadline:
            held = metric_sample(http_get(base + "/metrics")[1], "payment_worker_held_keys")
            time.sleep(0.1)
        assert held == 1
        assert http_get(base + "/readyz")[0] == 200
        sandbox_gateway.gateway.available = True
        read_topic(observed, observed.topic_results, expected=6, timeout=60)
        deadline = time.monotonic() + 10
        while held and time.monotonic() < deadline:
            _, text_metrics = http_get(base + "/metrics")
            held = metric_sample(text_metrics, "payment_worker_held_keys")
            time.sleep(0.1)
        assert held == 0
        assert metric_sample(text_metrics, "payment_worker_processing_latency_seconds_count") == 6
        assert metric_sample(text_metrics, "payment_worker_pipeline_restarts_total") == 0
    finally:
        assert worker.stop() == 0
