"""docker-compose.yml and deploy/compose/, without a Docker engine: structure against the code.

Each payment-worker service's command is parsed by the real CLI and its environment is
loaded by the real settings, so a misspelt variable or flag fails here. Addresses are
followed to the services that answer them: Kafka and PostgreSQL by service name, the
sandbox services on loopback in a shared network namespace, and every Prometheus target
to the worker or projection listening there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from clients.endpoint_policy import checked_base_url
from config.settings import ENV_PREFIX, Settings
from pipelines.cli import _parser
from tests.support.compose_yaml import ComposeLoader

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
LOCAL_OVERRIDE = ROOT / "deploy" / "compose" / "local-images.yml"
LOCAL_RECIPES = ROOT / "deploy" / "local-images"
LOCAL_IMAGE = "payment-worker:local"
PROFILE = "worker"
# The services a `--profile worker up` must start, beside kafka and postgres.
APPLICATION_SERVICES = {
    "migrate",
    "topics",
    "gateway",
    "user-service",
    "worker-1",
    "worker-2",
    "projection",
    "prometheus",
}

Service = dict[str, Any]


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def _services() -> dict[str, Service]:
    services: dict[str, Service] = _compose()["services"]
    return services


def _payment_worker_services() -> dict[str, Service]:
    return {
        name: service
        for name, service in _services().items()
        if service.get("image") == LOCAL_IMAGE
    }


def _command(service: Service) -> list[str]:
    command: list[str] = service["command"]
    return command


def _with_command(*prefix: str) -> dict[str, Service]:
    return {
        name: service
        for name, service in _payment_worker_services().items()
        if _command(service)[: len(prefix)] == list(prefix)
    }


def _workers() -> dict[str, Service]:
    return _with_command("run", "worker")


def _pipelines() -> dict[str, Service]:
    """The services that serve /metrics: the workers and the projection."""
    return _with_command("run")


def _sandbox(kind: str) -> tuple[str, Service]:
    ((name, service),) = _with_command("sandbox", kind).items()
    return name, service


def _namespace(name: str) -> str:
    """The service whose network namespace ``name`` runs in (its own, unless it joins one)."""
    mode = _services()[name].get("network_mode", "")
    return str(mode.removeprefix("service:")) if mode.startswith("service:") else name


def _environment(service: Service) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def _settings(service: Service, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container of ``service`` gets: its environment, nothing else."""
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    return Settings()


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def _container_ports(service: Service) -> set[int]:
    return {int(str(mapping).rsplit(":", 1)[1]) for mapping in service.get("ports", [])}


def _prometheus_config() -> tuple[Path, dict[str, Any]]:
    """deploy/compose/prometheus.yml, found through the compose file's mount and flag."""
    prometheus = _services()["prometheus"]
    (config_flag,) = [flag for flag in prometheus["command"] if flag.startswith("--config.file=")]
    in_container = Path(config_flag.partition("=")[2])
    for volume in prometheus["volumes"]:
        source, target, *_ = volume.split(":")
        if in_container.is_relative_to(target):
            path = ROOT / source / in_container.relative_to(target)
            config: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
            return path, config
    raise AssertionError(f"{in_container} is not inside a volume of the prometheus service")


# --- the two servers of the local stack ----------------------------------------------


def test_kafka_and_postgres_start_alone_on_the_default_settings_addresses() -> None:
    services = _services()
    bootstrap = Settings.model_fields["kafka_bootstrap_servers"].default
    database = make_url(Settings.model_fields["database_url"].default.get_secret_value())
    for name in ("kafka", "postgres"):
        assert "profiles" not in services[name], f"`docker compose up {name}` must start it"
        assert "depends_on" not in services[name]
    # host address:host port:container port, the HOST listener of the kafka service.
    assert f"{bootstrap}:9092" in services["kafka"]["ports"]
    assert f"127.0.0.1:{database.port}:5432" in services["postgres"]["ports"]
    environment = _environment(services["postgres"])
    assert (environment["POSTGRES_USER"], environment["POSTGRES_DB"]) == (
        database.username,
        database.database,
    )


# --- the application -----------------------------------------------------------------


def test_the_application_services_are_present_behind_a_profile() -> None:
    services = _services()
    assert set(services) >= APPLICATION_SERVICES | {"kafka", "postgres"}
    for name in APPLICATION_SERVICES:
        assert services[name].get("profiles") == [PROFILE], name
    assert set(_workers()) == {"worker-1", "worker-2"}
    assert set(_pipelines()) == {"worker-1", "worker-2", "projection"}


def test_every_payment_worker_service_runs_the_image_with_a_command_the_cli_accepts() -> None:
    services = _payment_worker_services()
    assert set(services) == APPLICATION_SERVICES - {"prometheus"}
    for name, service in services.items():
        assert service.get("build") == ".", f"{name}: built from ./Dockerfile"
        assert "entrypoint" not in service, f"{name}: the image's entrypoint is payment-worker"
        _parser().parse_args(_command(service))  # exits (fails the test) on a bad command


def test_every_variable_names_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The settings ignore unknown variables: a misspelt one would silently do nothing.
    for name, service in _payment_worker_services().items():
        for key in _environment(service):
            assert key.startswith(ENV_PREFIX), f"{name}: {key}"
            top, _, nested = key.removeprefix(ENV_PREFIX).lower().partition("__")
            assert top in Settings.model_fields, f"{name}: {key} is no setting"
            if nested:
                model = Settings.model_fields[top].annotation
                assert isinstance(model, type)
                assert issubclass(model, BaseModel)
                assert nested in model.model_fields, f"{name}: {key} is no setting"
        _settings(service, monkeypatch)  # and the values validate


def test_the_workers_and_the_projection_reach_kafka_and_postgres_by_service_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services()
    kafka = _environment(services["kafka"])
    advertised = {
        urlsplit(listener).netloc for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    postgres = _environment(services["postgres"])
    postgres_port = _container_ports(services["postgres"])
    for name, service in _payment_worker_services().items():
        if _command(service)[0] == "sandbox":
            continue
        settings = _settings(service, monkeypatch)
        for broker in settings.kafka_bootstrap_servers.split(","):
            assert broker in advertised, f"{name}: {broker} is no listener of the kafka service"
        url = make_url(settings.sqlalchemy_url())
        assert url.host == "postgres", name
        assert url.port in postgres_port, name
        assert (url.username, url.password, url.database) == (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        ), name


def test_the_workers_reach_the_sandbox_services_on_loopback_in_their_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for kind, setting in (("gateway", "gateway"), ("user-service", "user_service")):
        sandbox_name, sandbox = _sandbox(kind)
        command = _command(sandbox)
        assert _option(command, "--host") == "127.0.0.1"
        for name, worker in _workers().items():
            service_settings = getattr(_settings(worker, monkeypatch), setting)
            # The worker's own rule: plain http:// only to loopback, and only when allowed.
            url = checked_base_url(service_settings)
            assert url.host == "127.0.0.1"
            assert url.port == int(_option(command, "--port")), f"{name}: {kind}"
            assert _namespace(name) == _namespace(sandbox_name), (
                f"{name} and {sandbox_name} must share a network namespace to meet on loopback"
            )


def test_services_of_one_namespace_listen_on_distinct_ports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listening: dict[str, list[int]] = {}
    for name, service in _payment_worker_services().items():
        command = _command(service)
        if command[0] == "sandbox":
            port = int(_option(command, "--port"))
        elif command[0] == "run":
            port = _settings(service, monkeypatch).metrics_port
        else:
            continue  # one-shot commands listen on nothing
        listening.setdefault(_namespace(name), []).append(port)
    for namespace, ports in listening.items():
        assert len(ports) == len(set(ports)), f"two services bind one port in {namespace}"


def test_the_workers_share_a_group_with_a_transactional_id_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = [_settings(worker, monkeypatch) for worker in _workers().values()]
    assert len({worker.consumer_group for worker in settings}) == 1
    transactional_ids = [worker.kafka_transactional_id for worker in settings]
    assert None not in transactional_ids
    assert len(set(transactional_ids)) == len(transactional_ids)


def test_the_sandbox_healthchecks_probe_the_sandbox_ports() -> None:
    # The image's own check probes the worker's /healthz, which a sandbox does not serve.
    for kind in ("gateway", "user-service"):
        name, sandbox = _sandbox(kind)
        check = " ".join(sandbox["healthcheck"]["test"])
        assert f"('127.0.0.1', {_option(_command(sandbox), '--port')})" in check, name


def test_dependencies_and_namespaces_name_services_that_exist() -> None:
    services = _services()
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert set(depends_on) <= set(services), name
        for dependency, condition in depends_on.items():
            if condition["condition"] == "service_healthy":
                dependency_service = services[dependency]
                assert "healthcheck" in dependency_service or (
                    dependency_service.get("image") == LOCAL_IMAGE
                ), f"{name} waits for {dependency} to be healthy; it has no health check"
        joined = _namespace(name)
        assert joined in services, name
        assert _namespace(joined) == joined, "a namespace is joined at its owner"
        if joined != name:
            assert joined in depends_on, f"{name} joins {joined}: it must wait for it"


def test_the_workers_wait_for_the_migrations_and_the_topics() -> None:
    for name, service in _pipelines().items():
        depends_on = service["depends_on"]
        assert depends_on["topics"]["condition"] == "service_completed_successfully", name
        if name in _workers():
            assert depends_on["migrate"]["condition"] == "service_completed_successfully"


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image}"
        if image != LOCAL_IMAGE:
            # A release (4.1.1, v3.5.0, PostgreSQL's 16.11), not a line such as postgres:16.
            assert re.match(r"v?\d+(\.\d+)+(-|$)", tag), f"{name}: {image} is not exact"


# --- Prometheus ----------------------------------------------------------------------


def _prometheus_targets() -> list[str]:
    _, config = _prometheus_config()
    return [
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]


def test_prometheus_scrapes_every_worker_and_the_projection_at_its_metrics_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    services = _services()
    listening = {
        (_namespace(name), _settings(service, monkeypatch).metrics_port): name
        for name, service in _pipelines().items()
    }
    _, config = _prometheus_config()
    scraped: list[str] = []
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, _, port = target.rpartition(":")
                assert host in services, f"{target}: no service {host}"
                pipeline = listening.get((host, int(port)))
                assert pipeline is not None, f"{target}: no worker or projection listens there"
                # Dashboards and alerts name the compose service, not the shared namespace.
                assert group["labels"]["instance"] == pipeline
                scraped.append(pipeline)
    assert sorted(scraped) == sorted(_pipelines())


def test_prometheus_loads_the_alert_rules_of_deploy() -> None:
    path, config = _prometheus_config()
    rule_files = {(path.parent / rule_file).resolve() for rule_file in config["rule_files"]}
    assert rule_files == {ROOT / "deploy" / "prometheus" / "alerts.yaml"}


def test_ports_are_published_on_loopback_only() -> None:
    for name, service in _services().items():
        for mapping in service.get("ports", []):
            assert str(mapping).startswith("127.0.0.1:"), f"{name}: {mapping}"
    assert _container_ports(_services()["prometheus"]) == {9090}


def test_promtool_accepts_the_compose_config() -> None:
    """Prometheus' own check of the config and the rules it loads (skipped without promtool)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    path, _ = _prometheus_config()
    result = subprocess.run(
        [promtool, "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the override for machines without a registry (deploy/compose/local-images.yml) --------


def _override() -> dict[str, Service]:
    text = LOCAL_OVERRIDE.read_text(encoding="utf-8")
    services: dict[str, Service] = yaml.load(text, Loader=ComposeLoader)["services"]  # noqa: S506
    return services


def test_the_override_puts_every_service_on_the_host_network_with_nothing_published() -> None:
    override = _override()
    assert set(override) == set(_services()), "every service, or one would be on a bridge"
    for name, service in override.items():
        assert service["network_mode"] == "host", name
        assert service.get("ports", None) is None, f"{name}: ports mean nothing on the host"
        assert service["pull_policy"] == "never", f"{name}: no registry to pull from"


def test_the_override_resolves_every_service_name_the_system_uses_as_a_host() -> None:
    services = _services()
    hosts = {urlsplit(f"//{target}").hostname for target in _prometheus_targets()}
    kafka = _environment(services["kafka"])
    hosts |= {
        urlsplit(listener).hostname for listener in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    for service in _payment_worker_services().values():
        environment = _environment(service)
        if "PAYMENT_WORKER_DATABASE_URL" in environment:
            hosts.add(make_url(environment["PAYMENT_WORKER_DATABASE_URL"]).host)
    for name, service in _override().items():
        resolved = dict(entry.split(":", 1) for entry in service["extra_hosts"])
        missing = {host for host in hosts if host in services and host not in resolved}
        assert not missing, f"{name}: {missing} would not resolve on the host network"
        assert set(resolved.values()) == {"127.0.0.1"}, name


def test_the_override_swaps_each_public_image_for_a_local_stand_in_with_a_recipe() -> None:
    for name, service in _override().items():
        base_image = str(_services()[name]["image"])
        image = str(service.get("image", base_image))
        if base_image == LOCAL_IMAGE:
            assert image == LOCAL_IMAGE, f"{name}: the worker's own image, built locally"
            continue
        repository, _, _ = image.partition(":")
        assert repository.startswith("payment-worker-local/"), f"{name}: {image}"
        recipe = LOCAL_RECIPES / repository.removeprefix("payment-worker-local/") / "Dockerfile"
        assert recipe.is_file(), f"{name}: {image} has no recipe in deploy/local-images"
        assert image in (ROOT / "scripts" / "local-images").read_text(encoding="utf-8")


def test_the_override_moves_postgres_and_every_database_url_to_one_port() -> None:
    override = _override()
    command = override["postgres"]["command"]
    port = int(_option(command, "-p"))
    assert str(port) in " ".join(override["postgres"]["healthcheck"]["test"])
    for name, service in _payment_worker_services().items():
        if "PAYMENT_WORKER_DATABASE_URL" not in _environment(service):
            continue
        url = make_url(override[name]["environment"]["PAYMENT_WORKER_DATABASE_URL"])
        assert (url.host, url.port) == ("postgres", port), name
