"""Fixtures for tests against a real Kafka broker and PostgreSQL.

By default those of the running stack (start it with ``scripts/stack up``; ``make test``
does); with ``--services=containers`` (or ``PAYMENT_WORKER_TEST_SERVICES=containers``) a
Kafka and a PostgreSQL container of the session's own (tests/support/containers.py).
Every test gets its own topics, consumer group and Postgres schema, so tests never see
each other's data.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka.admin import AdminClient
from sqlalchemy import Engine, text

from config.kafka import librdkafka_config
from config.settings import GatewaySettings, Settings, UserServiceSettings, load_settings
from pipelines.topics import create_topics
from sandbox.gateway_server import SandboxGatewayServer
from sandbox.user_service_server import UserServiceStubServer
from state.database import create_database_engine, upgrade_schema
from tests.support.containers import (
    ContainerSettings,
    ServiceContainers,
    ServicesUnavailable,
    resolve_services,
)
from tests.support.harness import WorkerProcess


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack_settings(request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings for the session's Kafka and PostgreSQL: the stack's, or containers' (see the
    module's docstring). Fails (never skips) when they are not there."""
    try:
        services = resolve_services(request.config.getoption("services", None), os.environ)
    except ValueError as error:
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    if services == "stack":
        yield _running_stack_settings()
        return
    try:
        containers = ServiceContainers(ContainerSettings.from_environment(os.environ))
        settings = containers.start(load_settings())
    except (ValueError, ServicesUnavailable) as error:
        # Only the explanation: the Docker client's chain of causes says nothing more.
        raise pytest.fail.Exception(str(error), pytrace=False) from None
    yield settings
    for problem in containers.stop():  # cleanup only: the tests' outcomes stand
        warnings.warn(f"container not removed: {problem}", stacklevel=1)


def _running_stack_settings() -> Settings:
    settings = load_settings()
    admin = AdminClient(librdkafka_config(settings))
    try:
        admin.list_topics(timeout=15)
    except Exception as error:
        pytest.fail(
            f"Kafka is not reachable at {settings.kafka_bootstrap_servers} ({error}); "
            "start the stack with `scripts/stack up`"
        )
    engine = create_database_engine(settings)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {settings.database_url_for_display()} ({error}); "
            "start the stack with `scripts/stack up`"
        )
    finally:
        engine.dispose()
    return settings


@pytest.fixture
def sandbox_gateway() -> Iterator[SandboxGatewayServer]:
    """The sandbox payment gateway on a loopback port (real HTTP), one per test."""
    server = SandboxGatewayServer().start()
    yield server
    server.stop()


@pytest.fixture
def sandbox_client(sandbox_gateway: SandboxGatewayServer) -> Iterator[httpx.Client]:
    """An HTTP client for the sandbox gateway, to call it as a worker does."""
    with httpx.Client(base_url=sandbox_gateway.url, timeout=5) as http:
        yield http


@pytest.fixture
def user_service() -> Iterator[UserServiceStubServer]:
    """The User Service stand-in on a loopback port (real HTTP), one per test."""
    server = UserServiceStubServer().start()
    yield server
    server.stop()


@pytest.fixture
def settings(
    stack_settings: Settings,
    sandbox_gateway: SandboxGatewayServer,
    user_service: UserServiceStubServer,
) -> Iterator[Settings]:
    """Settings with unique topics, group and schema; created before, dropped after."""
    suffix = uuid.uuid4().hex[:12]
    isolated = stack_settings.model_copy(
        update={
            "gateway": GatewaySettings(
                base_url=sandbox_gateway.url,
                allow_plain_http_on_loopback=True,
                timeout_seconds=2.0,
            ),
            "user_service": UserServiceSettings(
                base_url=user_service.url, allow_plain_http_on_loopback=True
            ),
            "topic_commands": f"test.{suffix}.commands",
            "topic_events": f"test.{suffix}.events",
            "topic_results": f"test.{suffix}.results",
            "topic_dlq": f"test.{suffix}.dlq",
            "topic_partitions": 3,
            "consumer_group": f"test-{suffix}",
            "database_schema": f"test_{suffix}",
            "metrics_port": 0,
        }
    )
    # A broker on a busy 2-core machine can take a while to create topics.
    create_topics(isolated, timeout_seconds=90)
    engine = create_database_engine(isolated)
    upgrade_schema(engine, isolated.database_schema)
    yield isolated
    with engine.begin() as connection:
        connection.execute(text(f'DROP SCHEMA "{isolated.database_schema}" CASCADE'))
    engine.dispose()
    admin = AdminClient(librdkafka_config(isolated))
    names = [
        isolated.topic_commands,
        isolated.topic_events,
        isolated.topic_results,
        isolated.topic_dlq,
        isolated.projection_dlq_topic(),
    ]
    for name, future in admin.delete_topics(names, request_timeout=60).items():
        try:
            future.result(timeout=60)
        except Exception as error:  # cleanup only: the test's outcome stands
            warnings.warn(f"topic {name} was not deleted: {error!r}", stacklevel=1)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = create_database_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A real worker process (``payment-worker run``) on the test's topics and schema."""
    process = WorkerProcess(settings, tmp_path / "worker.log")
    process.start()
    yield process
    process.stop()
