"""The deployment manifests under ``deploy/``: they parse, and they match the code.

Kubernetes objects are checked for their structure (probes, resources, non-root, the
secret mount, selectors), the KEDA ScaledObject against the settings' defaults, and every
metric the alert rules and the Grafana dashboard name against the metrics the worker
registers in ``telemetry.metrics``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import telemetry.metrics  # noqa: F401 - registers the worker's metrics in REGISTRY
from config.settings import ENV_PREFIX, Settings
from tests.support.compose_yaml import ComposeLoader

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
DASHBOARD = DEPLOY / "grafana" / "payment-worker-dashboard.json"

METRICS_PORT = 9108
SECRETS_MOUNT = "/var/run/secrets/payment-worker"
TMP_MOUNT = "/tmp"  # noqa: S108 - the pods' writable emptyDir, not a file made here
METRIC_NAME = re.compile(r"\bpayment_worker_[a-z_]+")

# Sample names a family of each type exposes (prometheus_client drops ``_total`` from a
# counter's family name; ``_created`` is exposed next to counters and histograms).
SUFFIXES_BY_TYPE = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


Document = dict[str, Any]


def _documents(path: Path) -> list[Document]:
    with path.open(encoding="utf-8") as stream:
        # Compose's override files use compose's `!reset`; everything else is plain YAML.
        loaded = yaml.load_all(stream, Loader=ComposeLoader)
        documents = [document for document in loaded if document is not None]
    assert documents, f"{path} holds no document"
    for document in documents:
        assert isinstance(document, dict), f"{path}: a document is not a mapping"
    return documents


def _kubernetes_objects() -> list[Document]:
    return [document for path in sorted(KUBERNETES.glob("*.yaml")) for document in _documents(path)]


def _objects(kind: str) -> list[Document]:
    return [document for document in _kubernetes_objects() if document["kind"] == kind]


def _one(kind: str, name: str) -> Document:
    matches = [document for document in _objects(kind) if document["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def _exposed_metric_names() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("payment_worker_"):
            names.update(family.name + suffix for suffix in SUFFIXES_BY_TYPE[family.type])
    return names


def _settings_from(config_map: Document, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a pod gets from this ConfigMap alone (no other PAYMENT_WORKER_ vars)."""
    _clear_environment(monkeypatch)
    for key, value in config_map["data"].items():
        monkeypatch.setenv(key, value)
    return Settings()


def _clear_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a parsed JSON or YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _alert_rules() -> list[Document]:
    (rules_file,) = _documents(ALERTS)
    return [rule for group in rules_file["groups"] for rule in group["rules"]]


def _dashboard() -> Document:
    dashboard: Document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return dashboard


def _dashboard_expressions() -> list[str]:
    return [
        target["expr"] for panel in _dashboard()["panels"] for target in panel.get("targets", [])
    ]


# --- YAML and JSON ---------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    paths = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert {path.relative_to(DEPLOY).as_posix() for path in paths} >= {
        "kubernetes/worker.yaml",
        "kubernetes/projection.yaml",
        "kubernetes/keda-scaledobject.yaml",
        "prometheus/alerts.yaml",
    }
    for path in paths:
        _documents(path)


def test_every_kubernetes_object_is_namespace_agnostic_and_named() -> None:
    for document in _kubernetes_objects():
        assert document.get("apiVersion"), document
        assert document.get("kind"), document
        assert document["metadata"].get("name"), document
        assert "namespace" not in document["metadata"], document["metadata"]["name"]


def test_the_dashboard_is_json() -> None:
    dashboard = _dashboard()
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"]
    assert dashboard["title"]


# --- Deployments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args", "replicas"),
    [
        ("payment-worker", ["run", "worker"], 3),
        ("payment-worker-projection", ["run", "projection"], 2),
    ],
)
def test_deployment_runs_the_image_with_probes_resources_and_no_root(
    name: str, args: list[str], replicas: int
) -> None:
    deployment = _one("Deployment", name)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]

    assert spec["replicas"] == replicas
    assert _selects(spec["selector"]["matchLabels"], spec["template"]["metadata"]["labels"])
    assert container["image"] == "payment-worker:latest"
    assert container["args"] == args
    assert pod["terminationGracePeriodSeconds"] == 60

    # The metrics port, its probes and its scrape annotations.
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": METRICS_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    # Resources: requests and limits for CPU and memory.
    resources = container["resources"]
    for kind in ("requests", "limits"):
        assert set(resources[kind]) >= {"cpu", "memory"}, kind

    # Not root, read-only root file system with a writable /tmp, no capabilities.
    pod_security = pod.get("securityContext", {})
    security = container["securityContext"]
    assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
    assert security.get("runAsUser", pod_security.get("runAsUser", 1)) != 0
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[TMP_MOUNT]["name"]]

    # Settings: a ConfigMap of the same file, secrets as files in PAYMENT_WORKER_SECRETS_DIR.
    env = {variable["name"]: variable.get("value") for variable in container.get("env", [])}
    assert env[f"{ENV_PREFIX}SECRETS_DIR"] == SECRETS_MOUNT
    secret_mount = mounts[SECRETS_MOUNT]
    assert secret_mount["readOnly"] is True
    assert "secretName" in volumes[secret_mount["name"]]["secret"]
    (source,) = container["envFrom"]
    _one("ConfigMap", source["configMapRef"]["name"])


@pytest.mark.parametrize("name", ["payment-worker", "payment-worker-projection"])
def test_service_and_disruption_budget_select_the_deployment(name: str) -> None:
    deployment = _one("Deployment", name)
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    (budget,) = [
        budget
        for budget in _objects("PodDisruptionBudget")
        if _selects(budget["spec"]["selector"]["matchLabels"], labels)
    ]
    assert budget["spec"]["maxUnavailable"] == 1

    (service,) = [
        service for service in _objects("Service") if _selects(service["spec"]["selector"], labels)
    ]
    (port,) = service["spec"]["ports"]
    assert port["name"] == "metrics"
    assert port["targetPort"] == "metrics"


def test_selectors_keep_the_worker_and_the_projection_apart() -> None:
    worker = _one("Deployment", "payment-worker")["spec"]
    projection = _one("Deployment", "payment-worker-projection")["spec"]
    assert not _selects(
        worker["selector"]["matchLabels"], projection["template"]["metadata"]["labels"]
    )
    assert not _selects(
        projection["selector"]["matchLabels"], worker["template"]["metadata"]["labels"]
    )


def test_config_maps_hold_valid_settings_and_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret_settings = {"kafka_sasl_password", "kafka_ssl_key_password", "database_url"}
    secret_settings |= {"database_password"}
    for config_map in _objects("ConfigMap"):
        for key in config_map["data"]:
            assert key.startswith(ENV_PREFIX), key
            field = key.removeprefix(ENV_PREFIX).lower().split("__")[0]
            assert field in Settings.model_fields, key
            assert field not in secret_settings, f"{key} belongs in the Secret"
        _settings_from(config_map, monkeypatch)  # raises if a value is invalid


def test_worker_config_map_matches_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = _settings_from(_one("ConfigMap", "payment-worker-config"), monkeypatch)
    _clear_environment(monkeypatch)
    defaults = Settings()
    for field in ("topic_commands", "consumer_group", "topic_partitions", "metrics_port"):
        assert getattr(configured, field) == getattr(defaults, field), field


# --- KEDA ----------------------------------------------------------------------------------


def test_scaled_object_scales_the_worker_on_its_group_lag_up_to_the_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear_environment(monkeypatch)
    defaults = Settings()
    (scaled,) = _objects("ScaledObject")
    spec = scaled["spec"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert spec["scaleTargetRef"]["name"] == "payment-worker"
    _one("Deployment", spec["scaleTargetRef"]["name"])
    assert spec["minReplicaCount"] == 1
    # A partition is processed by one worker at a time: more workers would sit idle.
    assert spec["maxReplicaCount"] == defaults.topic_partitions

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == defaults.consumer_group
    assert metadata["topic"] == defaults.topic_commands
    assert int(metadata["lagThreshold"]) > 0
    assert metadata.get("allowIdleConsumers", "false") == "false"
    _one("TriggerAuthentication", trigger["authenticationRef"]["name"])


# --- Prometheus rules -------------------------------------------------------------------


def test_alert_rules_are_complete() -> None:
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), "alert names repeat"
    assert set(names) >= {
        "PaymentWorkerConsumerLagGrowing",
        "PaymentWorkerDeadLetters",
        "PaymentWorkerProcessingFailed",
        "PaymentWorkerCircuitOpen",
        "PaymentWorkerNoCommits",
        "PaymentWorkerRebalanceStorm",
        "PaymentWorkerPipelineRestarting",
        "PaymentWorkerProjectionGap",
        "PaymentWorkerGatewayOutsideContract",
        "PaymentWorkerOrphanAuthorizations",
    }
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert "What to do" in rule["annotations"]["description"], rule["alert"]
        assert METRIC_NAME.search(rule["expr"]), rule["alert"]


def test_alert_expressions_use_the_metrics_they_are_about() -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    expected = {
        "PaymentWorkerConsumerLagGrowing": ["payment_worker_consumer_lag"],
        "PaymentWorkerDeadLetters": ["payment_worker_dead_letters_total"],
        "PaymentWorkerProcessingFailed": ["payment_worker_dead_letters_total"],
        "PaymentWorkerCircuitOpen": ["payment_worker_circuit_breaker_state"],
        "PaymentWorkerNoCommits": [
            "payment_worker_checkpoint_commands_count",
            "payment_worker_consumer_lag",
        ],
        "PaymentWorkerRebalanceStorm": ["payment_worker_rebalances_total"],
        "PaymentWorkerPipelineRestarting": ["payment_worker_pipeline_restarts_total"],
        "PaymentWorkerProjectionGap": ["payment_worker_projection_gaps_total"],
        "PaymentWorkerGatewayOutsideContract": ["payment_worker_adverse_answers_total"],
        "PaymentWorkerOrphanAuthorizations": ["payment_worker_orphan_authorizations_total"],
    }
    for alert, metrics in expected.items():
        for metric in metrics:
            assert metric in METRIC_NAME.findall(expressions[alert]), (alert, metric)
    assert re.search(
        r"payment_worker_circuit_breaker_state\)\s*==\s*2", expressions["PaymentWorkerCircuitOpen"]
    )


def test_expressions_are_balanced_and_rate_only_counters() -> None:
    expressions = [rule["expr"] for rule in _alert_rules()] + _dashboard_expressions()
    for expression in expressions:
        for opening, closing in ("()", "{}", "[]"):
            assert expression.count(opening) == expression.count(closing), expression
        for metric in re.findall(r"\b(?:rate|increase)\(\s*(payment_worker_[a-z_]+)", expression):
            assert metric.endswith(("_total", "_count", "_sum", "_bucket")), metric


# --- Grafana --------------------------------------------------------------------------------


def test_dashboard_panels_use_the_datasource_variable() -> None:
    dashboard = _dashboard()
    (variable,) = [
        variable for variable in dashboard["templating"]["list"] if variable["name"] == "datasource"
    ]
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"

    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert panels
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in panels:
        assert panel["type"] == "timeseries", panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            assert METRIC_NAME.search(target["expr"]), panel["title"]


def test_dashboard_covers_the_operational_metrics() -> None:
    used = {name for expr in _dashboard_expressions() for name in METRIC_NAME.findall(expr)}
    assert used >= {
        "payment_worker_commands_total",
        "payment_worker_dead_letters_total",
        "payment_worker_consumer_lag",
        "payment_worker_checkpoint_commands_bucket",
        "payment_worker_checkpoint_write_seconds_bucket",
        "payment_worker_http_call_seconds_bucket",
        "payment_worker_circuit_breaker_state",
        "payment_worker_profile_lookups_total",
        "payment_worker_pipeline_restarts_total",
        "payment_worker_projection_events_total",
        "payment_worker_projection_gaps_total",
    }


# --- Metric names ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [ALERTS, DASHBOARD], ids=lambda path: path.name)
def test_every_metric_named_is_registered_by_the_worker(path: Path) -> None:
    parsed = _documents(path) if path.suffix == ".yaml" else [_dashboard()]
    referenced = {name for text in _strings(parsed) for name in METRIC_NAME.findall(text)}
    assert referenced
    missing = sorted(referenced - _exposed_metric_names())
    assert not missing, f"{path.name} names metrics telemetry.metrics does not register: {missing}"


# --- promtool, where installed ----------------------------------------------------------


def test_promtool_accepts_the_rules_and_the_dashboard_queries(tmp_path: Path) -> None:
    """PromQL syntax, checked by Prometheus itself (skipped where promtool is missing)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")
    dashboard_rules = tmp_path / "dashboard-rules.yaml"
    queries = [
        expr.replace("$__rate_interval", "5m").replace("$namespace", ".*")
        for expr in _dashboard_expressions()
    ]
    rules = [{"record": f"dashboard:query_{i}", "expr": q} for i, q in enumerate(queries)]
    dashboard_rules.write_text(yaml.safe_dump({"groups": [{"name": "dash", "rules": rules}]}))
    for path in (ALERTS, dashboard_rules):
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
