"""One benchmark run: three baselines and the worker, on the same broker and database.

Every measurement gets its own topics, consumer group and Postgres schema, removed after
it. Throughput is counted from the first output a read_committed consumer sees to the
moment it has seen one result per command (or until ``worker_seconds`` have passed, for
the worker: the rate it sustained until then), so process start-up and the consumer group
join are left out alike for the worker and the Kafka baselines (both are also reported
with start-up included). CPU per command is measured over the same window
(``bench.sampling``).

The worker runs three times on a pre-produced backlog: the realistic mix with the sandbox
gateway answering at once, and a gateway-bound workload (per user: a first card, which
creates the gateway customer, two payments, an update) with the gateway answering at once
and after ``gateway_delay_ms``: the last two give the share of throughput that survives a
slow gateway. Then a steady-load run at half the mix's rate times each command.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.baselines import BaselineProcess, write_batches
from bench.bulk_produce import produce_all
from bench.committed_outputs import count_committed_topics, watch_outputs
from bench.expected import ExpectedRun, replay
from bench.isolation import fresh_schema, fresh_topics, isolated_settings
from bench.latency import measure_latency
from bench.machine_facts import machine
from bench.procfs import rss_bytes
from bench.sampling import CpuWindow, WorkerSampler
from bench.sandbox_services import SandboxServices
from bench.workload import (
    GATEWAY_LIFECYCLE_COMMANDS,
    BenchCommand,
    generate_gateway_workload,
    generate_workload,
)
from config.settings import Settings, load_settings
from state.database import create_database_engine
from tests.support.harness import WorkerProcess
from tests.support.metrics_text import metric_sample, metric_value
from tests.support.probes import http_get, wait_until_ready, wait_until_serving

logger = logging.getLogger("bench")


@dataclass(frozen=True)
class BenchOptions:
    commands: int = 200_000
    users: int = 20_000
    seed: int = 42
    partitions: int = 12
    latency_seconds: float = 30.0
    # The database baseline replays this many commands through the domain first, then
    # writes their rows in transactions of ``db_batch`` commands.
    db_commands: int = 50_000
    db_batch: int = 5_000
    # The delayed-gateway comparison: users of the gateway-bound workload (4 commands
    # each), and the delay of the sandbox gateway's answers in the slow run.
    gateway_users: int = 5_000
    gateway_delay_ms: float = 100.0
    # Longest measured window of one worker throughput run (from its first visible result).
    worker_seconds: float = 120.0
    # How often the worker's /metrics is scraped (gateway calls in flight) and RSS read.
    sample_seconds: float = 0.25
    # After a worker run, its topics are read until nothing new came for this long.
    drain_seconds: float = 1.0
    # Longest wait for one Kafka baseline to finish.
    timeout_seconds: float = 600.0
    work_dir: Path = Path(".bench")
    smoke: bool = False


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


class _Phases:
    """Seconds each step took, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(now - self._mark, 1)
        self._mark = now


def _kafka_baseline(
    base: Settings,
    options: BenchOptions,
    workload: Sequence[BenchCommand],
    name: str,
    args: Sequence[str],
    *,
    own_cpu_report: Path | None = None,
) -> dict[str, Any]:
    settings = isolated_settings(base, name, partitions=options.partitions, services=None)
    with fresh_topics(settings):
        produce_all(settings, workload)
        started = time.monotonic()
        process = BaselineProcess(settings, name, options.work_dir / f"{name}.log", args)
        try:
            cpu = CpuWindow(process.pid)
            watch = watch_outputs(
                settings,
                settings.topic_results,
                expected=len(workload),
                timeout=options.timeout_seconds,
                on_batch=cpu.observe,
                still_running=process.is_running,
            )
        finally:
            process.stop()
    complete = watch.complete_at is not None
    cpu_report = cpu.report()
    # One result per command, so per output is per command (per consumed message).
    cpu_per_message = cpu_report["cpuMicrosecondsPerOutput"]
    if own_cpu_report is not None and own_cpu_report.exists():
        # The loop's own figure, from its first message to its last commit (see run_raw_loop).
        own = json.loads(own_cpu_report.read_text())
        cpu_per_message = round(own["cpuSeconds"] * 1e6 / max(1, own["messages"]), 1)
    return {
        "cpuMicrosecondsPerMessage": cpu_per_message,
        "cpuCores": cpu_report.get("cpuCores"),
        "commandsPerSecond": round(watch.rate(), 1),
        "commandsPerSecondWithStartup": (
            round(len(workload) / (watch.complete_at - started), 1)
            if watch.complete_at is not None
            else 0.0
        ),
        "outputsSeen": watch.count,
        "complete": complete,
    }


def _mean(total: float | None, count: float | None, digits: int = 1) -> float | None:
    return round(total / count, digits) if total is not None and count else None


def _worker_metrics(settings: Settings) -> dict[str, float | None]:
    """What the worker's own metrics say at the end of a run (None: not exported)."""
    status, text = http_get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    if status != 200:
        return {}

    def value(name: str, labels: str = "") -> float | None:
        return metric_value(text, name, labels)

    gateway = 'service="gateway"'
    return {
        "checkpointCommandsSum": metric_sample(text, "payment_worker_checkpoint_commands_sum"),
        "checkpointCount": metric_sample(text, "payment_worker_checkpoint_commands_count"),
        "checkpointWriteSecondsSum": metric_sample(
            text, "payment_worker_checkpoint_write_seconds_sum"
        ),
        "profileLookupsMiss": metric_sample(
            text, "payment_worker_profile_lookups_total", 'outcome="miss"'
        ),
        "pipelineRestarts": metric_sample(text, "payment_worker_pipeline_restarts_total"),
        "meanBatchMessages": _mean(
            value("payment_worker_batch_messages_sum"),
            value("payment_worker_batch_messages_count"),
        ),
        "meanBatchKeys": _mean(
            value("payment_worker_batch_keys_sum"), value("payment_worker_batch_keys_count")
        ),
        "batches": value("payment_worker_batch_messages_count"),
        "gatewayAttempts": value("payment_worker_http_call_seconds_count", gateway),
        # As the worker saw them: with a delayed sandbox, at least the delay.
        "meanGatewayCallMs": _mean(
            _scaled(value("payment_worker_http_call_seconds_sum", gateway), 1000.0),
            value("payment_worker_http_call_seconds_count", gateway),
        ),
    }


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _result_check(values: Sequence[bytes], workload: Sequence[BenchCommand]) -> dict[str, Any]:
    """Whether every command got exactly one result, and how they were decided."""
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    for value in values:
        document = json.loads(value)
        seen[str(document.get("commandId"))] += 1
        statuses[str(document.get("status"))] += 1
        if document.get("status") != "accepted":
            rejections[str(document.get("reason"))] += 1
    expected = {command.command_id for command in workload}
    return {
        "statuses": dict(statuses),
        "reasonsNotAccepted": dict(rejections),
        "missing": len(expected - set(seen)),
        "duplicates": sum(count - 1 for count in seen.values() if count > 1),
        "processedAll": expected <= set(seen),
    }


def _worker_throughput(
    base: Settings,
    options: BenchOptions,
    services: SandboxServices,
    workload: Sequence[BenchCommand],
    label: str,
) -> dict[str, Any]:
    """The worker on a pre-produced backlog of ``workload``: rate, CPU, in-flight, RSS."""
    settings = isolated_settings(base, label, partitions=options.partitions, services=services)
    steps = _Phases()
    with fresh_topics(settings), fresh_schema(settings):
        steps.done("topicsAndSchema")
        produce_all(settings, workload)
        steps.done("produce")
        worker = WorkerProcess(
            settings, options.work_dir / f"worker-{label}.log", die_with_parent=True
        )
        usage_before = services.usage()
        started = time.monotonic()
        worker.start()
        sampler: WorkerSampler | None = None
        try:
            wait_until_serving(settings, worker.is_running)
            steps.done("startUntilServing")
            rss_ready = rss_bytes(worker.pid)
            sampler = WorkerSampler(settings.metrics_port, worker.pid, options.sample_seconds)
            sampler.start()
            cpu = CpuWindow(worker.pid)
            watch = watch_outputs(
                settings,
                settings.topic_results,
                expected=len(workload),
                timeout=options.worker_seconds + 120,
                keep_values=True,
                on_batch=cpu.observe,
                still_running=worker.is_running,
                window_seconds=options.worker_seconds,
            )
            steps.done("servingUntilLastResult")
            sampler.stop()
            rss_end = rss_bytes(worker.pid)
            worker_metrics = _worker_metrics(settings)
        finally:
            if sampler is not None:
                sampler.stop()
            exit_code = worker.stop()
        steps.done("stop")
        usage_after = services.usage()
        # Everything it committed, also after the window (a run cut short by the window).
        topics = [settings.topic_events, settings.topic_dlq]
        if watch.complete_at is None:
            topics.append(settings.topic_results)
        counts = count_committed_topics(settings, topics, options.drain_seconds)
        results = counts.get(settings.topic_results, watch.count)
        events, dead_letters = counts[settings.topic_events], counts[settings.topic_dlq]
        steps.done("countOutputs")
    check = _result_check(watch.values, workload)
    cpu_report = cpu.report()
    rss = sampler.rss(watch.first_seen, watch.last_seen)
    return {
        "commands": len(workload),
        "commandsPerSecond": round(watch.rate(), 1),
        "commandsPerSecondWithStartup": (
            round(len(workload) / (watch.complete_at - started), 1)
            if watch.complete_at is not None
            else 0.0
        ),
        "windowSeconds": (
            round(watch.last_seen - watch.first_seen, 2)
            if watch.first_seen is not None and watch.last_seen is not None
            else None
        ),
        "resultsSeen": watch.count,
        "complete": watch.complete_at is not None,
        "resultsCommitted": results,
        "eventsSeen": events,
        "deadLetters": dead_letters,
        "outputsPerCommand": round((results + events) / max(1, results), 3),
        "results": check,
        # One result per command: CPU per result is CPU per command.
        "cpuMicrosecondsPerCommand": cpu_report["cpuMicrosecondsPerOutput"],
        "cpuCores": cpu_report.get("cpuCores"),
        "cpuCommands": cpu_report["cpuOutputs"],
        "cpuWindow": cpu_report["cpuWindow"],
        "gatewayCallsInFlight": sampler.in_flight(watch.first_seen, watch.last_seen),
        "rssReadyBytes": rss_ready,
        "rssHalfwayBytes": rss["rssMiddleBytes"] or rss_end,
        "rssEndBytes": rss_end,
        "rssPeakBytes": max(rss["rssPeakBytes"], rss_end),
        "metrics": worker_metrics,
        "sandbox": {name: usage_after[name].since(usage_before[name]) for name in usage_before},
        "exitCode": exit_code,
        "stepSeconds": steps.seconds,
    }


def _worker_latency(
    base: Settings,
    options: BenchOptions,
    services: SandboxServices,
    rate: float,
) -> dict[str, Any]:
    warmup = max(1, int(rate * min(2.0, options.latency_seconds / 5)))
    count = warmup + max(1, int(rate * options.latency_seconds))
    workload = generate_workload(
        count, options.users, options.seed + 1, run="l", link_distance=max(100, int(rate * 2))
    )
    settings = isolated_settings(base, "latency", partitions=options.partitions, services=services)
    with fresh_topics(settings), fresh_schema(settings):
        worker = WorkerProcess(
            settings, options.work_dir / "worker-latency.log", die_with_parent=True
        )
        worker.start()
        try:
            wait_until_ready(settings, worker.is_running)
            _wait_for_assignment(settings)
            rss_ready = rss_bytes(worker.pid)
            run = measure_latency(
                settings,
                workload,
                rate=rate,
                warmup=warmup,
                timeout=options.latency_seconds + 120,
            )
            rss_end = rss_bytes(worker.pid)
        finally:
            worker.stop()

    def milliseconds(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "targetRate": round(rate, 1),
        "achievedRate": round(run.produced / max(run.produce_seconds, 1e-6), 1),
        "commands": count,
        "warmupCommands": warmup,
        "resultsSeen": run.seen,
        "measured": len(run.latencies),
        "p50Ms": milliseconds(run.percentile(0.50)),
        "p95Ms": milliseconds(run.percentile(0.95)),
        "p99Ms": milliseconds(run.percentile(0.99)),
        "maxMs": milliseconds(max(run.latencies) if run.latencies else None),
        "meanMs": milliseconds(statistics.fmean(run.latencies) if run.latencies else None),
        "rssReadyBytes": rss_ready,
        "rssEndBytes": rss_end,
    }


def _wait_for_assignment(settings: Settings, timeout: float = 60.0) -> None:
    """Until the worker owns partitions, so the first commands don't wait for a rebalance."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, text = http_get(url)
        if status == 200 and metric_sample(text, "payment_worker_partitions_assigned") > 0:
            return
        time.sleep(0.2)
    raise TimeoutError("the worker was not assigned partitions in time")


def _database_baseline(
    base: Settings, rows: Sequence[Any], batch_size: int, partitions: int
) -> dict[str, Any]:
    """The worker's rows for these commands, written in bulk: what PostgreSQL alone allows."""
    settings = isolated_settings(base, "database", partitions=partitions, services=None)
    with fresh_schema(settings):
        engine = create_database_engine(settings)
        try:
            seconds = write_batches(engine, rows, batch_size)
        finally:
            engine.dispose()
    return {
        "commandsPerSecond": round(len(rows) / max(seconds, 1e-6), 1),
        "commands": len(rows),
        "batchSize": batch_size,
        "transactions": -(-len(rows) // batch_size),
        "seconds": round(seconds, 3),
    }


def _database_stage(metrics: dict[str, float | None]) -> dict[str, Any]:
    """The worker's checkpoint writes alone, from its own metrics."""
    commands = metrics.get("checkpointCommandsSum") or 0.0
    checkpoints = metrics.get("checkpointCount") or 0.0
    seconds = metrics.get("checkpointWriteSecondsSum") or 0.0
    return {
        "dbStageCommandsPerSecond": round(commands / seconds, 1) if seconds else 0.0,
        "meanCheckpointCommands": round(commands / checkpoints) if checkpoints else 0,
    }


def _baselines(
    base: Settings,
    options: BenchOptions,
    workload: Sequence[BenchCommand],
    expected: ExpectedRun,
    phases: _Phases,
) -> dict[str, Any]:
    fanout = expected.outputs_per_command
    _say(f"baseline A: raw confluent-kafka loop, {fanout:.2f} outputs per command")
    raw_cpu = options.work_dir / "raw-cpu.json"
    raw_cpu.unlink(missing_ok=True)
    raw = _kafka_baseline(
        base,
        options,
        workload,
        "raw",
        ["--fanout", f"{fanout:.4f}", "--expect", str(len(workload)), "--cpu-report", str(raw_cpu)],
        own_cpu_report=raw_cpu,
    )
    raw["outputsPerCommand"] = round(fanout, 3)
    _say(f"  {raw['commandsPerSecond']} commands/s, {raw['cpuMicrosecondsPerMessage']} µs CPU/msg")
    phases.done("raw")
    _say("baseline B: quixstreams pass-through, exactly-once")
    passthrough = _kafka_baseline(base, options, workload, "passthrough", [])
    passthrough["outputsPerCommand"] = 1.0
    _say(f"  {passthrough['commandsPerSecond']} commands/s")
    phases.done("passthrough")

    batch = min(options.db_batch, max(1, len(expected.rows)))
    _say(f"baseline C: PostgreSQL bulk writes of {len(expected.rows)} commands, {batch} a batch")
    database = _database_baseline(base, expected.rows, batch, options.partitions)
    _say(f"  {database['commandsPerSecond']} commands/s")
    phases.done("database")
    return {"raw": raw, "passthrough": passthrough, "database": database}


def _worker_runs(
    base: Settings,
    options: BenchOptions,
    workload: Sequence[BenchCommand],
    gateway_workload: Sequence[BenchCommand],
    phases: _Phases,
) -> dict[str, Any]:
    services = SandboxServices(options.work_dir).start()
    try:
        _say(f"worker: realistic mix, 0 ms gateway (at most {options.worker_seconds:.0f} s)")
        worker = _worker_throughput(base, options, services, workload, "mix")
        worker.update(_database_stage(worker["metrics"]))
        _say(
            f"  {worker['commandsPerSecond']} commands/s,"
            f" {worker['cpuMicrosecondsPerCommand']} µs CPU/command"
        )
        phases.done("workerThroughput")

        _say(f"worker: gateway-bound workload ({len(gateway_workload)} commands), 0 ms gateway")
        undelayed = _worker_throughput(base, options, services, gateway_workload, "gw0")
        _say(f"  {undelayed['commandsPerSecond']} commands/s")
        phases.done("workerGateway0ms")

        rate = max(20.0, worker["commandsPerSecond"] / 2)
        _say(f"worker: latency at {rate:.0f} commands/s for {options.latency_seconds:.0f} s")
        latency = _worker_latency(base, options, services, rate)
        _say(f"  p50 {latency['p50Ms']} ms, p99 {latency['p99Ms']} ms")
        phases.done("workerLatency")
    finally:
        services.stop()

    delay = options.gateway_delay_ms / 1000
    slow = SandboxServices(options.work_dir, gateway_delay_seconds=delay).start()
    try:
        _say(f"worker: gateway-bound workload, {options.gateway_delay_ms:g} ms gateway")
        delayed = _worker_throughput(base, options, slow, gateway_workload, "gwslow")
        _say(f"  {delayed['commandsPerSecond']} commands/s")
        phases.done("workerGatewayDelayed")
    finally:
        slow.stop()
    return {
        "throughput": worker,
        "gatewayUndelayed": undelayed,
        "gatewayDelayed": delayed,
        "latency": latency,
    }


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Every measurement, in one run; returns the report (see ``bench.report``)."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    base = load_settings()
    began = time.time()
    host = machine()  # the load average before this run adds its own

    _say(f"generating {options.commands} commands for {options.users} users (seed {options.seed})")
    workload = generate_workload(options.commands, options.users, options.seed)
    gateway_workload = generate_gateway_workload(options.gateway_users, options.seed + 2)
    replayed = workload[: options.db_commands]
    _say(f"replaying {len(replayed)} commands through the domain rules (expected outcome)")
    replay_started = time.perf_counter()
    expected = replay(replayed)
    replay_seconds = time.perf_counter() - replay_started
    fanout = expected.outputs_per_command
    gateway_expected = replay(gateway_workload, keep_rows=False)

    phases = _Phases()
    phases.seconds["prepare"] = round(time.time() - began, 1)
    baselines = _baselines(base, options, workload, expected, phases)
    worker = _worker_runs(base, options, workload, gateway_workload, phases)

    return {
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
        "durationSeconds": round(time.time() - began, 1),
        "loadAverage1mAtEnd": round(os.getloadavg()[0], 2),
        "phaseSeconds": phases.seconds,
        "machine": host,
        "options": {
            "commands": options.commands,
            "users": options.users,
            "seed": options.seed,
            "partitions": options.partitions,
            "latencySeconds": options.latency_seconds,
            "dbCommands": len(replayed),
            "dbBatch": baselines["database"]["batchSize"],
            "gatewayUsers": options.gateway_users,
            "gatewayDelayMs": options.gateway_delay_ms,
            "workerSeconds": options.worker_seconds,
            "sampleSeconds": options.sample_seconds,
            "commitIntervalSeconds": base.commit_interval_seconds,
            "commitEvery": base.commit_every,
            "batchMaxMessages": base.batch_max_messages,
            "gatewayMaxInFlight": base.gateway_max_in_flight,
            "smoke": options.smoke,
        },
        "workload": {
            "types": dict(Counter(command.type for command in workload)),
            "meanCommandBytes": round(
                sum(len(command.value) for command in workload) / max(1, len(workload)), 1
            ),
            "expectedStatuses": dict(expected.statuses),
            "expectedReasonsNotAccepted": dict(expected.reasons_not_accepted),
            "expectedOutputsPerCommand": round(fanout, 3),
            # Schema decoding, decide and serialising events in this one Python process:
            # a ceiling for a single-process worker on this machine, before any I/O.
            "domainReplayCommandsPerSecond": round(len(replayed) / max(replay_seconds, 1e-6), 1),
            "gateway": {
                "users": options.gateway_users,
                "commandsPerUser": GATEWAY_LIFECYCLE_COMMANDS,
                "types": dict(Counter(command.type for command in gateway_workload)),
                "expectedStatuses": dict(gateway_expected.statuses),
            },
        },
        "baselines": baselines,
        "worker": worker,
    }
