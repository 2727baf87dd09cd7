"""One benchmark run: three baselines and the worker, on the same broker and database.

Every measurement gets its own topics, consumer group and Postgres schema, removed after
it. Throughput is counted from the first output a read_committed consumer sees to the
moment it has seen one result per command, so process start-up and the consumer group
join are left out alike for the worker and the Kafka baselines (both are also reported
with start-up included).
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
from bench.expected import replay
from bench.harness import WorkerProcess
from bench.latency import measure_latency
from bench.stack import (
    SandboxServices,
    count_committed,
    fresh_schema,
    fresh_topics,
    http_get,
    isolated_settings,
    machine,
    metric_sample,
    produce_all,
    rss_bytes,
    wait_until_ready,
    watch_outputs,
)
from bench.workload import BenchCommand, generate_workload
from config.settings import Settings, load_settings
from state.database import create_database_engine

logger = logging.getLogger("bench")

RSS_SAMPLE_SECONDS = 0.5


@dataclass(frozen=True)
class BenchOptions:
    commands: int = 200_000
    users: int = 20_000
    seed: int = 42
    partitions: int = 12
    latency_seconds: float = 30.0
    # The database baseline replays this many commands through the domain first.
    db_commands: int = 50_000
    # Longest wait for one throughput measurement to finish.
    timeout_seconds: float = 1800.0
    work_dir: Path = Path(".bench")
    smoke: bool = False


def _say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _kafka_baseline(
    base: Settings,
    options: BenchOptions,
    workload: Sequence[BenchCommand],
    name: str,
    args: Sequence[str],
) -> dict[str, Any]:
    settings = isolated_settings(base, name, partitions=options.partitions, services=None)
    with fresh_topics(settings):
        produce_all(settings, workload)
        started = time.monotonic()
        process = BaselineProcess(settings, name, options.work_dir / f"{name}.log", args)
        try:
            watch = watch_outputs(
                settings,
                settings.topic_results,
                expected=len(workload),
                timeout=options.timeout_seconds,
                still_running=process.is_running,
            )
        finally:
            process.stop()
    complete = watch.complete_at is not None
    return {
        "commandsPerSecond": round(watch.rate(), 1),
        "commandsPerSecondWithStartup": (
            round(len(workload) / (watch.complete_at - started), 1)
            if watch.complete_at is not None
            else 0.0
        ),
        "outputsSeen": watch.count,
        "complete": complete,
    }


def _worker_metrics(settings: Settings) -> dict[str, float]:
    status, text = http_get(f"http://127.0.0.1:{settings.metrics_port}/metrics")
    if status != 200:
        return {}
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
    }


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
) -> dict[str, Any]:
    settings = isolated_settings(base, "worker", partitions=options.partitions, services=services)
    with fresh_topics(settings), fresh_schema(settings):
        produce_all(settings, workload)
        worker = WorkerProcess(settings, options.work_dir / "worker-throughput.log")
        started = time.monotonic()
        worker.start()
        samples: list[tuple[int, int]] = []  # (results seen, RSS bytes)
        try:
            wait_until_ready(settings, worker.is_running)
            rss_ready = rss_bytes(worker.pid)
            next_sample = 0.0

            def sample(now: float, count: int) -> None:
                nonlocal next_sample
                if now >= next_sample:
                    samples.append((count, rss_bytes(worker.pid)))
                    next_sample = now + RSS_SAMPLE_SECONDS

            watch = watch_outputs(
                settings,
                settings.topic_results,
                expected=len(workload),
                timeout=options.timeout_seconds,
                keep_values=True,
                on_batch=sample,
                still_running=worker.is_running,
            )
            rss_end = rss_bytes(worker.pid)
            worker_metrics = _worker_metrics(settings)
            events = count_committed(settings, settings.topic_events)
            dead_letters = count_committed(settings, settings.topic_dlq, idle_seconds=0.5)
        finally:
            worker.stop()
    halfway = next((rss for count, rss in samples if count >= len(workload) // 2), rss_end)
    check = _result_check(watch.values, workload)
    return {
        "commandsPerSecond": round(watch.rate(), 1),
        "commandsPerSecondWithStartup": (
            round(len(workload) / (watch.complete_at - started), 1)
            if watch.complete_at is not None
            else 0.0
        ),
        "resultsSeen": watch.count,
        "complete": watch.complete_at is not None,
        "eventsSeen": events,
        "deadLetters": dead_letters,
        "outputsPerCommand": round((watch.count + events) / max(1, len(workload)), 3),
        "results": check,
        "rssReadyBytes": rss_ready,
        "rssHalfwayBytes": halfway,
        "rssEndBytes": rss_end,
        "rssPeakBytes": max([rss for _, rss in samples] + [rss_end]),
        "metrics": worker_metrics,
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
        worker = WorkerProcess(settings, options.work_dir / "worker-latency.log")
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
        "seconds": round(seconds, 3),
    }


def _database_stage(metrics: dict[str, float]) -> dict[str, Any]:
    """The worker's checkpoint writes alone, from its own metrics."""
    commands = metrics.get("checkpointCommandsSum", 0.0)
    checkpoints = metrics.get("checkpointCount", 0.0)
    seconds = metrics.get("checkpointWriteSecondsSum", 0.0)
    return {
        "dbStageCommandsPerSecond": round(commands / seconds, 1) if seconds else 0.0,
        "meanCheckpointCommands": round(commands / checkpoints) if checkpoints else 0,
    }


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Every measurement, in one run; returns the report (see ``bench.report``)."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    base = load_settings()
    began = time.time()
    host = machine()  # the load average before this run adds its own

    _say(f"generating {options.commands} commands for {options.users} users (seed {options.seed})")
    workload = generate_workload(options.commands, options.users, options.seed)
    replayed = workload[: options.db_commands]
    _say(f"replaying {len(replayed)} commands through the domain rules (expected outcome)")
    replay_started = time.perf_counter()
    expected = replay(replayed)
    replay_seconds = time.perf_counter() - replay_started
    fanout = expected.outputs_per_command

    phases: dict[str, float] = {"prepare": round(time.time() - began, 1)}

    def phase_done(name: str, since: float) -> float:
        phases[name] = round(time.monotonic() - since, 1)
        return time.monotonic()

    mark = time.monotonic()
    _say(f"baseline A: raw confluent-kafka loop, {fanout:.2f} outputs per command")
    raw = _kafka_baseline(
        base,
        options,
        workload,
        "raw",
        ["--fanout", f"{fanout:.4f}", "--expect", str(len(workload))],
    )
    raw["outputsPerCommand"] = round(fanout, 3)
    _say(f"  {raw['commandsPerSecond']} commands/s")
    mark = phase_done("raw", mark)
    _say("baseline B: quixstreams pass-through, exactly-once")
    passthrough = _kafka_baseline(base, options, workload, "passthrough", [])
    passthrough["outputsPerCommand"] = 1.0
    _say(f"  {passthrough['commandsPerSecond']} commands/s")
    mark = phase_done("passthrough", mark)

    services = SandboxServices(options.work_dir).start()
    try:
        _say("worker: sustained throughput on the pre-produced backlog")
        worker = _worker_throughput(base, options, services, workload)
        _say(f"  {worker['commandsPerSecond']} commands/s")
        mark = phase_done("workerThroughput", mark)
        worker.update(_database_stage(worker["metrics"]))

        _say(f"baseline C: batched Postgres writes of {len(expected.rows)} commands")
        batch = worker["meanCheckpointCommands"] or 1000
        database = _database_baseline(base, expected.rows, batch, options.partitions)
        _say(f"  {database['commandsPerSecond']} commands/s")
        mark = phase_done("database", mark)

        rate = max(20.0, worker["commandsPerSecond"] / 2)
        _say(f"worker: latency at {rate:.0f} commands/s for {options.latency_seconds:.0f} s")
        latency = _worker_latency(base, options, services, rate)
        _say(f"  p50 {latency['p50Ms']} ms, p99 {latency['p99Ms']} ms")
        phase_done("workerLatency", mark)
    finally:
        services.stop()

    return {
        "startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(began)),
        "durationSeconds": round(time.time() - began, 1),
        "loadAverage1mAtEnd": round(os.getloadavg()[0], 2),
        "phaseSeconds": phases,
        "machine": host,
        "options": {
            "commands": options.commands,
            "users": options.users,
            "seed": options.seed,
            "partitions": options.partitions,
            "latencySeconds": options.latency_seconds,
            "dbCommands": len(replayed),
            "commitIntervalSeconds": base.commit_interval_seconds,
            "commitEvery": base.commit_every,
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
        },
        "baselines": {"raw": raw, "passthrough": passthrough, "database": database},
        "worker": {"throughput": worker, "latency": latency},
    }
