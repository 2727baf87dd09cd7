"""Kafka and PostgreSQL for the integration tests in containers of their own (testcontainers).

``--services=containers`` (or ``PAYMENT_WORKER_TEST_SERVICES=containers``) starts one Kafka
and one PostgreSQL container for the test session instead of using the running stack. Each
container listens on a free loopback port of the host itself (Kafka also advertises it), so
the same configuration works on the host's network (``host``: engines without a bridge) and
on Docker's bridge (``bridge``: the port is published as the same number on the host).

The pure parts (which services, which images and network, the Kafka variables) are plain
functions, tested without Docker in tests/unit/test_service_containers.py.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

from confluent_kafka.admin import AdminClient
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from config.kafka import librdkafka_config
from config.settings import Settings
from tests.support.harness import free_port

ServicesMode = Literal["stack", "containers"]
NetworkMode = Literal["bridge", "host"]

SERVICES_VARIABLE = "PAYMENT_WORKER_TEST_SERVICES"
KAFKA_IMAGE_VARIABLE = "PAYMENT_WORKER_TEST_KAFKA_IMAGE"
POSTGRES_IMAGE_VARIABLE = "PAYMENT_WORKER_TEST_POSTGRES_IMAGE"
NETWORK_VARIABLE = "PAYMENT_WORKER_TEST_CONTAINER_NETWORK"

DEFAULT_KAFKA_IMAGE = "apache/kafka:4.1.1"
DEFAULT_POSTGRES_IMAGE = "postgres:16.11-bookworm"

SERVICES_MODES: tuple[ServicesMode, ...] = ("stack", "containers")
NETWORK_MODES: tuple[NetworkMode, ...] = ("bridge", "host")

# The same cluster id as docker-compose.yml's broker (any base64 UUID would do).
KAFKA_CLUSTER_ID = "xp96v7OWDOISRUGxRJD85Q"
POSTGRES_USER = "payment_worker"
POSTGRES_PASSWORD = "payment_worker"
POSTGRES_DB = "payments"

# Both containers start at once; a JVM broker on a busy 2-core machine takes a while.
START_TIMEOUT_SECONDS = 180.0
LOG_LINES_IN_FAILURES = 30


class ServicesUnavailable(Exception):
    """The test services could not be started or did not become ready (the tests fail)."""


_Mode = TypeVar("_Mode", bound=str)


def _one_of(value: str, allowed: tuple[_Mode, ...], source: str) -> _Mode:
    normalized = value.strip().lower()
    for mode in allowed:
        if normalized == mode:
            return mode
    raise ValueError(f"{source} must be one of {', '.join(allowed)}, not {value!r}")


def resolve_services(option: str | None, environ: Mapping[str, str]) -> ServicesMode:
    """The services the integration tests use: ``--services``, else the environment, else
    the running stack."""
    if option:
        return _one_of(option, SERVICES_MODES, "--services")
    from_environment = environ.get(SERVICES_VARIABLE, "")
    if from_environment.strip():
        return _one_of(from_environment, SERVICES_MODES, SERVICES_VARIABLE)
    return "stack"


@dataclass(frozen=True)
class ContainerSettings:
    """Which images to run and on which network: ``PAYMENT_WORKER_TEST_*`` variables."""

    kafka_image: str = DEFAULT_KAFKA_IMAGE
    postgres_image: str = DEFAULT_POSTGRES_IMAGE
    network: NetworkMode = "bridge"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> ContainerSettings:
        network = environ.get(NETWORK_VARIABLE, "").strip()
        return cls(
            kafka_image=environ.get(KAFKA_IMAGE_VARIABLE, "").strip() or DEFAULT_KAFKA_IMAGE,
            postgres_image=environ.get(POSTGRES_IMAGE_VARIABLE, "").strip()
            or DEFAULT_POSTGRES_IMAGE,
            network=_one_of(network, NETWORK_MODES, NETWORK_VARIABLE) if network else "bridge",
        )


@dataclass(frozen=True)
class Ports:
    """The host's loopback ports the services listen on (the containers' own, too)."""

    kafka: int
    kafka_controller: int
    postgres: int

    @classmethod
    def free(cls) -> Ports:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        kafka, controller, postgres = sorted(ports)
        return cls(kafka=kafka, kafka_controller=controller, postgres=postgres)


def _listen_address(network: NetworkMode) -> str:
    # On the host's network only loopback is needed (and nothing else of the host sees the
    # services); behind a bridge, Docker's port forwarding arrives on the container's own
    # interface.
    return "127.0.0.1" if network == "host" else "0.0.0.0"  # noqa: S104


def kafka_environment(ports: Ports, network: NetworkMode) -> dict[str, str]:
    """The apache/kafka image's variables for one KRaft node (broker and controller), as
    docker-compose.yml's broker, listening on ``ports.kafka`` and advertising
    ``127.0.0.1`` there."""
    listen = _listen_address(network)
    return {
        "CLUSTER_ID": KAFKA_CLUSTER_ID,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": f"1@127.0.0.1:{ports.kafka_controller}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENERS": (
            f"PLAINTEXT://{listen}:{ports.kafka},CONTROLLER://127.0.0.1:{ports.kafka_controller}"
        ),
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{ports.kafka}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        # One node: internal topics (offsets, transactions) cannot have replicas.
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_NUM_PARTITIONS": "12",
        # Topics are created explicitly, as in production.
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


def postgres_environment() -> dict[str, str]:
    return {
        "POSTGRES_USER": POSTGRES_USER,
        "POSTGRES_PASSWORD": POSTGRES_PASSWORD,
        "POSTGRES_DB": POSTGRES_DB,
    }


def postgres_command(port: int, network: NetworkMode) -> list[str]:
    """``postgres`` on ``port``; no fsync: the data lives as long as the test session."""
    command = ["postgres", "-p", str(port), "-c", "fsync=off"]
    if network == "host":
        command += ["-c", f"listen_addresses={_listen_address(network)}"]
    return command


def database_url(port: int) -> str:
    return (
        f"postgresql+psycopg://{POSTGRES_USER}:{POSTGRES_PASSWORD}@127.0.0.1:{port}/{POSTGRES_DB}"
    )


def settings_for(base: Settings, ports: Ports) -> Settings:
    """``base`` pointed at the containers (``model_copy`` does not validate: the URL goes
    in as the ``SecretStr`` the field holds)."""
    return base.model_copy(
        update={
            "kafka_bootstrap_servers": f"127.0.0.1:{ports.kafka}",
            "database_url": SecretStr(database_url(ports.postgres)),
        }
    )


@dataclass(frozen=True)
class ContainerSpec:
    """One container, before Docker hears of it: what runs, and the ports it listens on
    (the same numbers inside and on the host)."""

    name: str
    image: str
    command: list[str] | None
    environment: dict[str, str]
    ports: tuple[int, ...]
    network: NetworkMode

    def published_ports(self) -> dict[int, int]:
        """Container port -> host port: none on the host's network (nothing to publish)."""
        return {} if self.network == "host" else {port: port for port in self.ports}

    def docker_arguments(self) -> dict[str, Any]:
        """Extra arguments for Docker's container create."""
        return {"network_mode": "host"} if self.network == "host" else {}

    def container(self) -> DockerContainer:
        """A testcontainers container for this spec (needs a Docker engine)."""
        container = DockerContainer(self.image, env=dict(self.environment), name=self.name)
        if self.command is not None:
            container.with_command(self.command)
        for inside, outside in self.published_ports().items():
            container.with_bind_ports(inside, outside)
        arguments = self.docker_arguments()
        if arguments:
            container.with_kwargs(**arguments)
        return container


def kafka_spec(image: str, ports: Ports, network: NetworkMode, session: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"payment-worker-tc-kafka-{session}",
        image=image,
        command=None,
        environment=kafka_environment(ports, network),
        ports=(ports.kafka,),
        network=network,
    )


def postgres_spec(image: str, ports: Ports, network: NetworkMode, session: str) -> ContainerSpec:
    return ContainerSpec(
        name=f"payment-worker-tc-postgres-{session}",
        image=image,
        command=postgres_command(ports.postgres, network),
        environment=postgres_environment(),
        ports=(ports.postgres,),
        network=network,
    )


def _docker_host() -> str:
    return os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST is not set)"


def _ryuk_hint() -> str:
    if testcontainers_config.ryuk_disabled:
        return ""
    return (
        f"; testcontainers' reaper (Ryuk) is enabled and needs the image "
        f"{testcontainers_config.ryuk_image}: where it cannot be pulled, set "
        "TESTCONTAINERS_RYUK_DISABLED=true"
    )


def _last_log_lines(container: DockerContainer) -> str:
    try:
        raw = cast(bytes, container.get_wrapped_container().logs(tail=LOG_LINES_IN_FAILURES))
    except Exception as error:
        return f"    (no logs: {error!r})"
    lines = raw.decode(errors="replace").rstrip().splitlines() or ["(no output)"]
    return "\n".join(f"    {line}" for line in lines)


@dataclass
class _Started:
    spec: ContainerSpec
    container: DockerContainer


def _exited(started: _Started) -> bool:
    started.container.reload()
    return started.container.status in ("exited", "dead")


def _wait_until(
    started: _Started, since: float, what: str, probe: Callable[[], str | None]
) -> None:
    """Calls ``probe`` (None: ready; else why not) until it succeeds, the container exits
    or ``START_TIMEOUT_SECONDS`` after ``since`` (``time.monotonic``)."""
    deadline = since + START_TIMEOUT_SECONDS
    reason = "not tried"
    while True:
        try:
            answer = probe()
        except Exception as error:
            answer = repr(error)
        if answer is None:
            return
        reason = answer
        if _exited(started) or time.monotonic() >= deadline:
            break
        time.sleep(1)
    state = "exited" if started.container.status in ("exited", "dead") else "is not ready"
    raise ServicesUnavailable(
        f"{what} in container {started.spec.name} (image {started.spec.image}) {state} "
        f"after {time.monotonic() - since:.0f} s; last attempt: {reason}\n"
        f"  its last log lines:\n{_last_log_lines(started.container)}"
    )


def _kafka_probe(settings: Settings) -> Callable[[], str | None]:
    # Refused connections while the broker starts are expected: librdkafka keeps quiet, and
    # the last failure is reported should the broker never answer.
    config: dict[str, Any] = {**librdkafka_config(settings), "log_level": 0}

    def probe() -> str | None:
        metadata = AdminClient(config).list_topics(timeout=5)
        return None if metadata.brokers else "the cluster lists no broker yet"

    return probe


def _postgres_probe(settings: Settings) -> Callable[[], str | None]:
    def probe() -> str | None:
        engine = create_engine(
            settings.sqlalchemy_url(), poolclass=NullPool, connect_args={"connect_timeout": 5}
        )
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
        return None

    return probe


@dataclass
class ServiceContainers:
    """One Kafka and one PostgreSQL container; ``start`` waits until both answer."""

    config: ContainerSettings
    ports: Ports = field(default_factory=Ports.free)
    session: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _started: list[_Started] = field(default_factory=list)

    def specs(self) -> list[ContainerSpec]:
        network = self.config.network
        return [
            kafka_spec(self.config.kafka_image, self.ports, network, self.session),
            postgres_spec(self.config.postgres_image, self.ports, network, self.session),
        ]

    def start(self, base: Settings) -> Settings:
        """Start both containers, wait for them and return ``base`` pointed at them; on
        failure nothing is left running and ``ServicesUnavailable`` says why."""
        try:
            since = time.monotonic()
            for_kafka, for_postgres = self.specs()
            kafka = self._start(for_kafka)
            postgres = self._start(for_postgres)
            settings = settings_for(base, self.ports)
            _wait_until(kafka, since, "Kafka", _kafka_probe(settings))
            _wait_until(postgres, since, "PostgreSQL", _postgres_probe(settings))
        except BaseException:
            self.stop()
            raise
        return settings

    def _start(self, spec: ContainerSpec) -> _Started:
        try:
            container = spec.container()
        except Exception as error:
            raise ServicesUnavailable(
                f"no Docker engine answers at {_docker_host()} ({error}); the integration "
                "tests on containers need one (docs/testing.md)"
            ) from error
        started = _Started(spec, container)
        try:
            container.start()
        except Exception as error:
            # A container created but not started is removed too.
            self._started.append(started)
            raise ServicesUnavailable(
                f"could not start {spec.name} from image {spec.image} on the {spec.network} "
                f"network ({error}); is the image there or can it be pulled? "
                f"({KAFKA_IMAGE_VARIABLE} and {POSTGRES_IMAGE_VARIABLE} name the images)"
                f"{_ryuk_hint()}"
            ) from error
        self._started.append(started)
        return started

    def stop(self) -> list[str]:
        """Remove every container started (with its volumes); the errors, if any."""
        errors: list[str] = []
        while self._started:
            started = self._started.pop()
            try:
                started.container.stop()
            except Exception as error:
                errors.append(f"{started.spec.name}: {error!r}")
        return errors
