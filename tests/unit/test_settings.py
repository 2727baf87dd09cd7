from __future__ import annotations

from pathlib import Path

import pytest

from config.kafka import librdkafka_config
from config.settings import Settings, load_settings


def test_environment_variables_use_one_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_WORKER_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("PAYMENT_WORKER_TOPIC_PARTITIONS", "24")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "not-ours:9092")

    settings = load_settings()

    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert settings.topic_partitions == 24


def test_secrets_come_from_files_and_never_show(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "PAYMENT_WORKER_KAFKA_SASL_PASSWORD").write_text("s3cret-from-file")
    (tmp_path / "PAYMENT_WORKER_DATABASE_PASSWORD").write_text("db-s3cret")
    monkeypatch.setenv("PAYMENT_WORKER_SECRETS_DIR", str(tmp_path))

    settings = load_settings()

    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cret-from-file"
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())
    assert ":db-s3cret@" in settings.sqlalchemy_url()
    assert "s3cret" not in settings.database_url_for_display()


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.consumer_group = "other"  # type: ignore[misc]


def test_invalid_schema_name_is_refused() -> None:
    with pytest.raises(ValueError, match="database_schema"):
        Settings(database_schema='x"; DROP TABLE payment_methods; --')


def test_plain_connection_has_no_security_properties() -> None:
    config = librdkafka_config(Settings(kafka_bootstrap_servers="k:9092"))
    assert config == {"bootstrap.servers": "k:9092", "security.protocol": "PLAINTEXT"}


def test_sasl_ssl_settings_pass_through_to_librdkafka(tmp_path: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="worker",
        kafka_sasl_password="pw",
        kafka_ssl_ca_location=tmp_path / "ca.pem",
        kafka_extra_config={"client.id": "payment-worker-1"},
    )

    config = librdkafka_config(settings)

    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "worker"
    assert config["sasl.password"] == "pw"
    assert config["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert config["client.id"] == "payment-worker-1"


def test_one_nested_setting_keeps_the_other_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYMENT_WORKER_GATEWAY__TIMEOUT_SECONDS", "7")
    settings = load_settings()
    assert settings.gateway.timeout_seconds == 7
    assert settings.gateway.base_url == "https://payment-gateway.internal"
    assert settings.user_service.base_url == "https://user-service.internal"
