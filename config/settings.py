"""The one frozen settings object.

Settings are read once, in ``load_settings``, from environment variables prefixed
``PAYMENT_WORKER_`` and from secret files (one file per setting, named like its variable, in
``PAYMENT_WORKER_SECRETS_DIR``, e.g. a Kubernetes secret volume). Nothing else in the
code base reads the environment. Secrets are ``SecretStr`` so they never appear in a
``repr`` or a log line.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

ENV_PREFIX = "PAYMENT_WORKER_"
SECRETS_DIR_VARIABLE = f"{ENV_PREFIX}SECRETS_DIR"

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]


class HttpServiceSettings(BaseModel):
    """How to reach one HTTP service: address, time budget, TLS and authentication.

    Credentials are files (mounted secrets), read when a call needs them, so they can be
    rotated without a restart and never sit in the environment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    # Per attempt; a lookup with retries stays within ``total_budget_seconds``.
    timeout_seconds: float = Field(default=2.0, gt=0)
    total_budget_seconds: float = Field(default=5.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    circuit_failure_threshold: int = Field(default=5, ge=1)
    circuit_reset_seconds: float = Field(default=30.0, gt=0)
    # Calls per second this worker may start (a token bucket, ``rate_limit_burst`` deep);
    # 0: no limit of ours. A 429 with Retry-After pauses every call to the service.
    rate_limit_per_second: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=50, ge=1)
    # TLS: a CA bundle to trust (default: the system's), and a client certificate for mTLS.
    ca_bundle: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    # Plain HTTP only to a loopback address, and only when explicitly allowed (development).
    allow_plain_http_on_loopback: bool = False
    # Service-to-service auth: a bearer token read from a file, or a JWT the worker signs.
    bearer_token_file: Path | None = None
    jwt_signing_key_file: Path | None = None
    jwt_algorithm: Literal["RS256", "ES256", "HS256"] = "RS256"
    jwt_audience: str | None = None
    jwt_issuer: str = "payment-worker"
    jwt_ttl_seconds: int = Field(default=300, ge=30)

    @model_validator(mode="after")
    def _one_kind_of_auth(self) -> HttpServiceSettings:
        if self.bearer_token_file is not None and self.jwt_signing_key_file is not None:
            raise ValueError("set bearer_token_file or jwt_signing_key_file, not both")
        if (self.client_certificate is None) != (self.client_key is None):
            raise ValueError("client_certificate and client_key go together")
        if self.jwt_signing_key_file is not None and not self.jwt_audience:
            raise ValueError("jwt_audience is required when the worker signs tokens")
        return self


class UserServiceSettings(HttpServiceSettings):
    base_url: str = "https://user-service.internal"


class GatewaySettings(HttpServiceSettings):
    base_url: str = "https://payment-gateway.internal"


class ProfileCacheSettings(BaseModel):
    """The bounded cache in front of the User Service profile lookup."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttl_seconds: float = Field(default=300.0, gt=0)
    # A 404 is remembered briefly, so a burst of commands for a deleted user makes one call.
    negative_ttl_seconds: float = Field(default=30.0, ge=0)
    # While the User Service fails, an expired profile may still serve this long.
    stale_if_error_seconds: float = Field(default=900.0, ge=0)
    max_entries: int = Field(default=50_000, ge=1)


class Settings(BaseSettings):
    """Everything the worker can be told. Defaults fit the local stack (scripts/stack)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    # --- Kafka -----------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    kafka_ssl_endpoint_identification_algorithm: Literal["https", "none"] = "https"
    # Any other librdkafka property, as a JSON object; applied last to consumers,
    # producers and the admin client alike.
    kafka_extra_config: dict[str, str] = Field(default_factory=dict)

    topic_commands: str = "payment.commands"
    topic_events: str = "payment.events"
    topic_results: str = "payment.command-results"
    topic_dlq: str = "payment.commands.dlq"
    topic_partitions: int = Field(default=12, ge=1)
    # -1 lets the broker choose (its default.replication.factor), KIP-464.
    topic_replication_factor: int = Field(default=-1, ge=-1)

    consumer_group: str = "payment-worker"
    # quixstreams wants a local state directory even for a stateless pipeline like this
    # one; nothing of value is kept there.
    quixstreams_state_dir: Path = Path(tempfile.gettempdir()) / "payment-worker-quixstreams"
    # Events become visible to read_committed consumers when the Kafka transaction of
    # a checkpoint commits, so this bounds the added latency of every command.
    commit_interval_seconds: float = Field(default=0.1, gt=0)
    commit_every: int = Field(default=5000, ge=0)
    # The command pipeline takes up to ``batch_max_messages`` messages or what arrives
    # in ``batch_max_wait_seconds``, decides them, writes PostgreSQL once and commits one
    # Kafka transaction. Commands whose gateway call is still running after
    # ``batch_deadline_seconds`` are carried to the next batch (docs/decisions/0009).
    batch_max_messages: int = Field(default=1000, ge=1, le=100_000)
    batch_max_wait_seconds: float = Field(default=0.05, gt=0)
    batch_deadline_seconds: float = Field(default=0.2, gt=0)
    # Commands whose gateway or User Service calls may run at once, across keys.
    gateway_max_in_flight: int = Field(default=256, ge=1, le=4096)
    # Per partition, at most this many offsets between the oldest carried command and
    # the newest consumed one; beyond it the partition pauses until its carried commands
    # finish (memory, and the size of the offset metadata, stay bounded).
    max_carried_offsets: int = Field(default=20_000, ge=100)
    # At most this many commands carried in all (waiting for calls, or behind a key that
    # waits); beyond it the worker stops fetching until half are done: it bounds memory
    # when the gateway cannot keep up or keys are held by an outage.
    max_carried_commands: int = Field(default=4_000, ge=100)
    # The key-state cache (state/key_state_cache.py): keys whose active payment methods and
    # newest command ids stay in memory between checkpoints, the least recently used
    # evicted first when either bound is reached. Writes are fenced, so the cache never
    # needs to be told of rebalances. The bytes bound is what bounds memory: a key costs
    # from 0.6 KiB (a guest payment) to some 16 KiB (20 cards), by the store's estimate of
    # its objects. A worker is about 200 MiB without the cache, so 96 MiB keeps it well
    # under 512 MiB (python -m bench.memory: 286 MiB after 1,000,000 commands, in process).
    state_cache_keys: int = Field(default=50_000, ge=1)
    state_cache_max_bytes: int = Field(default=96 * 2**20, ge=2**20)
    # Per key, the ids of its newest commands: a redelivered or re-sent command among them
    # is answered from the inbox without a query; an older duplicate is caught by the
    # inbox's primary key when its checkpoint is written (it costs a retried checkpoint).
    state_cache_recent_commands: int = Field(default=16, ge=1)
    # How far ahead of the worker's clock a command's issuedAt may be; a command issued
    # further in the future is dead-lettered (issued_in_future). Producers' clocks drift.
    command_max_future_skew_seconds: float = Field(default=300.0, ge=0)
    # SIGTERM/SIGINT: time to commit the current batch and leave the group before the
    # process exits anyway (uncommitted work is then redelivered). Keep it below the
    # orchestrator's grace period (terminationGracePeriodSeconds: 60 in deploy/).
    shutdown_timeout_seconds: float = Field(default=30.0, gt=0)
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    # A worker killed mid-transaction leaves it open until this timeout, and
    # read_committed consumers of the partitions it wrote to wait until then. Keep it
    # short, but well above the commit interval and one batch's processing time.
    kafka_transaction_timeout_ms: int = Field(default=10_000, ge=1_000)
    # How long a worker that died without leaving the group keeps its partitions before
    # the group hands them to the others: failover time against false alarms.
    # Brokers refuse less than their group.min.session.timeout.ms (6 s by default).
    kafka_session_timeout_ms: int = Field(default=45_000, ge=6_000)
    # How often librdkafka reports consumer lag and connection state (metrics, readiness).
    kafka_statistics_interval_ms: int = Field(default=5_000, ge=100)
    # A stable transactional id per worker instance (e.g. a StatefulSet pod name) lets
    # a restarted worker abort its predecessor's open transaction at once. Two running
    # workers must never share one. Empty: a random id per process.
    kafka_transactional_id: str | None = None

    # --- PostgreSQL ------------------------------------------------------------------
    # TLS for Postgres goes in the URL query: ?sslmode=verify-full&sslrootcert=...
    database_url: SecretStr = SecretStr(
        "postgresql+psycopg://payment_worker:payment_worker@127.0.0.1:55432/payments"
    )
    # When set (e.g. from a secret file), replaces the password in database_url, so the
    # URL itself can live in plain configuration.
    database_password: SecretStr | None = None
    database_schema: str = Field(default="payment_worker", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    database_pool_size: int = Field(default=5, ge=1)
    database_statement_timeout_ms: int = Field(default=10_000, ge=0)
    database_connect_timeout_seconds: int = Field(default=10, ge=1)

    # --- Outbound HTTP services ---------------------------------------------------------
    # Nested: PAYMENT_WORKER_USER_SERVICE__BASE_URL, PAYMENT_WORKER_GATEWAY__TIMEOUT_SECONDS...
    user_service: UserServiceSettings = Field(default_factory=UserServiceSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    profile_cache: ProfileCacheSettings = Field(default_factory=ProfileCacheSettings)

    # --- The User Service projection (``payment-worker run projection``) ----------------
    # A different service's consumer: its own group, its own PostgreSQL schema.
    projection_consumer_group: str = "user-service-payment-view"
    projection_schema: str = Field(default="user_payment_views", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    # Its dead letters; empty: "<topic_events>.projection-dlq".
    topic_projection_dlq: str | None = None

    # --- Operations ------------------------------------------------------------------
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes from outside the pod
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one broker, e.g. kafka-1:9092")
        return value.strip()

    def projection_dlq_topic(self) -> str:
        return self.topic_projection_dlq or f"{self.topic_events}.projection-dlq"

    def sqlalchemy_url(self) -> str:
        """The database URL with the password from ``database_password`` if one is set."""
        url = make_url(self.database_url.get_secret_value())
        if url.drivername in ("postgresql", "postgres"):
            url = url.set(drivername="postgresql+psycopg")
        if self.database_password is not None:
            url = url.set(password=self.database_password.get_secret_value())
        return url.render_as_string(hide_password=False)

    def database_url_for_display(self) -> str:
        """The database URL with its password masked, safe for logs."""
        url = make_url(self.database_url.get_secret_value())
        return url.render_as_string(hide_password=True)


def load_settings(**overrides: Any) -> Settings:
    """Read the settings once: environment, then secret files; overrides win (tests)."""
    secrets_dir = os.environ.get(SECRETS_DIR_VARIABLE)
    if secrets_dir:
        return Settings(_secrets_dir=secrets_dir, **overrides)
    return Settings(**overrides)
