"""The choices of tests/support/containers.py that need no Docker engine: which services,
which images and network, and the containers' configuration on either network."""

from __future__ import annotations

import pytest

from config.settings import Settings
from tests.support.containers import (
    DEFAULT_KAFKA_IMAGE,
    DEFAULT_POSTGRES_IMAGE,
    ContainerSettings,
    NetworkMode,
    Ports,
    kafka_environment,
    kafka_spec,
    postgres_command,
    postgres_spec,
    resolve_services,
    settings_for,
)

PORTS = Ports(kafka=41001, kafka_controller=41002, postgres=41003)


def test_the_stack_is_the_default() -> None:
    assert resolve_services(None, {}) == "stack"
    assert resolve_services(None, {"PAYMENT_WORKER_TEST_SERVICES": " "}) == "stack"


def test_the_environment_chooses_when_the_option_is_not_given() -> None:
    environ = {"PAYMENT_WORKER_TEST_SERVICES": "Containers"}

    assert resolve_services(None, environ) == "containers"


def test_the_option_wins_over_the_environment() -> None:
    environ = {"PAYMENT_WORKER_TEST_SERVICES": "containers"}

    assert resolve_services("stack", environ) == "stack"
    assert resolve_services("containers", {}) == "containers"


@pytest.mark.parametrize(
    ("option", "environ", "named"),
    [
        ("docker", {}, "--services"),
        (None, {"PAYMENT_WORKER_TEST_SERVICES": "compose"}, "PAYMENT_WORKER_TEST_SERVICES"),
    ],
)
def test_an_unknown_choice_is_refused(
    option: str | None, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        resolve_services(option, environ)


def test_images_and_network_default_to_the_public_images_on_a_bridge() -> None:
    config = ContainerSettings.from_environment({})

    assert config == ContainerSettings(
        kafka_image="apache/kafka:4.1.1", postgres_image="postgres:16.11-bookworm", network="bridge"
    )
    assert (config.kafka_image, config.postgres_image) == (
        DEFAULT_KAFKA_IMAGE,
        DEFAULT_POSTGRES_IMAGE,
    )


def test_images_and_network_come_from_the_environment() -> None:
    config = ContainerSettings.from_environment(
        {
            "PAYMENT_WORKER_TEST_KAFKA_IMAGE": "payment-worker-local/kafka:4.1.1",
            "PAYMENT_WORKER_TEST_POSTGRES_IMAGE": "payment-worker-local/postgres:15-bookworm",
            "PAYMENT_WORKER_TEST_CONTAINER_NETWORK": "host",
        }
    )

    assert config == ContainerSettings(
        kafka_image="payment-worker-local/kafka:4.1.1",
        postgres_image="payment-worker-local/postgres:15-bookworm",
        network="host",
    )


def test_an_unknown_network_is_refused() -> None:
    with pytest.raises(ValueError, match="PAYMENT_WORKER_TEST_CONTAINER_NETWORK"):
        ContainerSettings.from_environment({"PAYMENT_WORKER_TEST_CONTAINER_NETWORK": "none"})


def test_free_ports_are_three_different_ones() -> None:
    ports = Ports.free()

    assert len({ports.kafka, ports.kafka_controller, ports.postgres}) == 3


@pytest.mark.parametrize("network", ["host", "bridge"])
def test_kafka_is_one_kraft_node_advertising_its_own_loopback_port(network: NetworkMode) -> None:
    environment = kafka_environment(PORTS, network)

    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert environment["KAFKA_NODE_ID"] == "1"
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@127.0.0.1:41002"
    assert environment["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:41001"
    assert environment["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    assert environment["KAFKA_INTER_BROKER_LISTENER_NAME"] == "PLAINTEXT"
    assert environment["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] == (
        "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
    )
    assert environment["KAFKA_NUM_PARTITIONS"] == "12"
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert environment["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == "0"
    assert environment["CLUSTER_ID"]
    single_node = [
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR",
        "KAFKA_DEFAULT_REPLICATION_FACTOR",
        "KAFKA_MIN_INSYNC_REPLICAS",
    ]
    assert {environment[name] for name in single_node} == {"1"}
    assert all(isinstance(value, str) for value in environment.values())


def test_kafka_listens_on_loopback_on_the_host_network_and_everywhere_behind_a_bridge() -> None:
    assert kafka_environment(PORTS, "host")["KAFKA_LISTENERS"] == (
        "PLAINTEXT://127.0.0.1:41001,CONTROLLER://127.0.0.1:41002"
    )
    assert kafka_environment(PORTS, "bridge")["KAFKA_LISTENERS"] == (
        "PLAINTEXT://0.0.0.0:41001,CONTROLLER://127.0.0.1:41002"
    )


def test_postgres_listens_on_its_port_without_fsync() -> None:
    assert postgres_command(41003, "bridge") == ["postgres", "-p", "41003", "-c", "fsync=off"]
    assert postgres_command(41003, "host") == [
        "postgres",
        "-p",
        "41003",
        "-c",
        "fsync=off",
        "-c",
        "listen_addresses=127.0.0.1",
    ]


def test_on_the_host_network_nothing_is_published() -> None:
    for spec in (
        kafka_spec("kafka", PORTS, "host", "s1"),
        postgres_spec("postgres", PORTS, "host", "s1"),
    ):
        assert spec.published_ports() == {}
        assert spec.docker_arguments() == {"network_mode": "host"}


def test_behind_a_bridge_each_port_is_published_as_the_same_number() -> None:
    kafka = kafka_spec("kafka", PORTS, "bridge", "s1")
    postgres = postgres_spec("postgres", PORTS, "bridge", "s1")

    # The controller stays inside the container: only the broker's listener is published.
    assert kafka.published_ports() == {41001: 41001}
    assert postgres.published_ports() == {41003: 41003}
    assert kafka.docker_arguments() == postgres.docker_arguments() == {}


def test_specs_name_their_images_and_session() -> None:
    kafka = kafka_spec("my/kafka:1", PORTS, "host", "abc")
    postgres = postgres_spec("my/postgres:1", PORTS, "host", "abc")

    assert (kafka.image, kafka.command, kafka.name) == (
        "my/kafka:1",
        None,
        "payment-worker-tc-kafka-abc",
    )
    assert (postgres.image, postgres.name) == ("my/postgres:1", "payment-worker-tc-postgres-abc")
    assert postgres.environment == {
        "POSTGRES_USER": "payment_worker",
        "POSTGRES_PASSWORD": "payment_worker",
        "POSTGRES_DB": "payments",
    }


def test_the_settings_point_at_the_containers_and_keep_the_rest() -> None:
    base = Settings(consumer_group="mine", kafka_bootstrap_servers="elsewhere:9092")

    settings = settings_for(base, PORTS)

    assert settings.kafka_bootstrap_servers == "127.0.0.1:41001"
    assert settings.database_url.get_secret_value() == (
        "postgresql+psycopg://payment_worker:payment_worker@127.0.0.1:41003/payments"
    )
    assert settings.sqlalchemy_url() == settings.database_url.get_secret_value()
    assert settings.consumer_group == "mine"
