"""Every Prometheus metric of the worker, in one place.

Label values are bounded (command types, outcomes, reason codes), never user ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Info

BUILD_INFO = Info("payment_worker_build", "Version and source commit of the running worker.")

COMMANDS = Counter(
    "payment_worker_commands_total",
    "Commands processed, by command type and result status.",
    ["type", "status"],
)
DEAD_LETTERS = Counter(
    "payment_worker_dead_letters_total",
    "Messages sent to the dead-letter topic, by reason code.",
    ["reason"],
)
REPLAYED_OUTCOMES = Counter(
    "payment_worker_replayed_outcomes_total",
    "Redelivered commands whose stored outcome was re-emitted instead of re-decided.",
)
CONSUMER_LAG = Gauge(
    "payment_worker_consumer_lag",
    "Messages between this worker's position and the end of each assigned partition.",
    ["topic", "partition"],
)
PARTITIONS_ASSIGNED = Gauge(
    "payment_worker_partitions_assigned",
    "Partitions currently assigned to this worker's consumer.",
)
REBALANCES = Counter(
    "payment_worker_rebalances_total",
    "Partition assignment changes of this worker's consumer, from librdkafka's rebalance_cnt: "
    "an assignment and a revocation count one each, so one group rebalance usually adds 2.",
)
READY = Gauge(
    "payment_worker_ready",
    "1 when the worker is ready (pipeline running, Kafka and PostgreSQL reachable).",
)
PIPELINE_RESTARTS = Counter(
    "payment_worker_pipeline_restarts_total",
    "Times the pipeline stopped on an unavailable dependency and started again.",
)
PROCESSING_LATENCY = Histogram(
    "payment_worker_processing_latency_seconds",
    "From a command's Kafka timestamp (when it was produced) until the Kafka transaction "
    "holding its events and result committed, i.e. until read_committed consumers see them.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
KAFKA_TRANSACTIONS = Counter(
    "payment_worker_kafka_transactions_total",
    "Kafka transactions of checkpoints holding records, by outcome: committed, aborted "
    "(the checkpoint was abandoned, e.g. a failed PostgreSQL write or a rebalance), "
    "failed (the commit itself failed, e.g. the producer was fenced by a newer instance).",
    ["outcome"],
)
POSTGRES_ERRORS = Counter(
    "payment_worker_postgres_errors_total",
    "PostgreSQL failures by kind: conflict (another writer stored a row of this batch "
    "first; the batch is retried), unavailable (connection lost or refused, a timeout, a "
    "serialization failure; retried) or unstorable (a value PostgreSQL refuses; the "
    "command is dead-lettered as processing_failed).",
    ["kind"],
)
CHECKPOINT_COMMANDS = Histogram(
    "payment_worker_checkpoint_commands",
    "Commands written to PostgreSQL per checkpoint transaction.",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000),
)
CHECKPOINT_WRITE_SECONDS = Histogram(
    "payment_worker_checkpoint_write_seconds",
    "Duration of the PostgreSQL transaction of one checkpoint.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

BATCH_MESSAGES = Histogram(
    "payment_worker_batch_messages",
    "Messages consumed per batch of the command pipeline.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
BATCH_KEYS = Histogram(
    "payment_worker_batch_keys",
    "Distinct stream keys with commands in one batch.",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
GATEWAY_CALLS_IN_FLIGHT = Gauge(
    "payment_worker_gateway_calls_in_flight",
    "Commands whose gateway or User Service calls are running now (at most gateway_max_in_flight).",
)
CARRIED_COMMANDS = Gauge(
    "payment_worker_carried_commands",
    "Commands consumed but not yet committed because a command before them of the same key "
    "waits for the gateway or the User Service.",
)
HELD_KEYS = Gauge(
    "payment_worker_held_keys",
    "Keys whose next command waits for an unavailable dependency (retried with back-off); "
    "other keys keep flowing.",
)

# --- Outbound HTTP services (label ``service``: "user_service", "gateway") ----------------
HTTP_CALL_SECONDS = Histogram(
    "payment_worker_http_call_seconds",
    "Duration of one HTTP attempt to an outbound service (retries are separate attempts).",
    ["service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
HTTP_ATTEMPTS = Counter(
    "payment_worker_http_attempts_total",
    "HTTP attempts to an outbound service, by outcome: a status class (2xx, 3xx, 4xx, 5xx) "
    "or timeout, connect_error, tls_error, transport_error.",
    ["service", "outcome"],
)
CIRCUIT_BREAKER_STATE = Gauge(
    "payment_worker_circuit_breaker_state",
    "Circuit breaker in front of an outbound service: 0 closed, 1 half-open, 2 open.",
    ["service"],
)
RATE_LIMIT_WAITS = Counter(
    "payment_worker_rate_limit_waits_total",
    "Outbound calls that waited for the rate limit (ours, or a 429's Retry-After).",
    ["service"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "payment_worker_rate_limit_wait_seconds_total",
    "Time outbound calls spent waiting for the rate limit.",
    ["service"],
)
ADVERSE_ANSWERS = Counter(
    "payment_worker_adverse_answers_total",
    "Answers of the gateway and the User Service other than a plain success, by service, "
    "operation and answer (docs/dependencies.md, the table of answers): busy (409), "
    "unauthorized (401, 403), refused (another 4xx), not_found (404), key_conflict (422), "
    "unexpected (an answer the contract does not allow), unusable_profile.",
    ["service", "operation", "answer"],
)
AUTHORIZATION_CANCELS = Counter(
    "payment_worker_authorization_cancels_total",
    "Technical cancels of authorizations the worker does not keep, by reason: "
    "payment_id_taken (another command stored the payment id) or outcome_unknown (the "
    "gateway's answer did not say whether it authorized).",
    ["reason"],
)
ORPHAN_AUTHORIZATIONS = Counter(
    "payment_worker_orphan_authorizations_total",
    "Cancels that found an authorization at the gateway (it would have been left behind), "
    "by reason, as for payment_worker_authorization_cancels_total.",
    ["reason"],
)
PROFILE_LOOKUPS = Counter(
    "payment_worker_profile_lookups_total",
    "User Service profile lookups, by outcome: hit (fresh in the cache, or fetched by a "
    "concurrent lookup), miss (fetched), negative (the user does not exist), stale (an "
    "expired profile served while the User Service fails), error (nothing usable), "
    "unusable (an answer that can never give a profile: another 4xx, a malformed body).",
    ["outcome"],
)
PROFILE_CACHE_ENTRIES = Gauge(
    "payment_worker_profile_cache_entries",
    "Entries in the User Service profile cache (profiles and remembered 404s).",
)

# --- The User Service projection (``payment-worker run projection``) ---------------------
PROJECTION_EVENTS = Counter(
    "payment_worker_projection_events_total",
    "Events read by the projection, by outcome: applied, ignored (a type the view does not "
    "use; its sequence still counts), duplicate (already applied), gap (an earlier event of "
    "the user is missing), held (the user has a gap; not applied until a rebuild), guest "
    "(no user), invalid (dead-lettered).",
    ["outcome"],
)
PROJECTION_IGNORED_TYPES = Counter(
    "payment_worker_projection_ignored_events_total",
    'Events the view does not use, by type: a known event type, or "unknown" for a type '
    "newer than this consumer.",
    ["type"],
)
PROJECTION_GAPS = Counter(
    "payment_worker_projection_gaps_total",
    "Users whose events have a gap (a missing sequence number); their view is held.",
)
PROJECTION_LATENCY = Histogram(
    "payment_worker_projection_latency_seconds",
    "From an event's Kafka timestamp until the projection's PostgreSQL transaction that "
    "applied it committed (its Kafka transaction commits right after).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROJECTION_CHECKPOINT_EVENTS = Histogram(
    "payment_worker_projection_checkpoint_events",
    "Events staged per projection checkpoint transaction.",
    buckets=(1, 10, 50, 100, 500, 1000, 5000, 10000),
)
