"""``python -m bench.memory``: does a worker's memory stay flat over a million commands?

DESIGN.md §6 asks for an RSS under 512 MiB over 1,000,000 commands and 200,000 users.
What grows in a worker is what it keeps between messages: the key-state cache of
``state.command_store.CommandStore``, the checkpoint's staged decisions, the clients'
caches. So by default this runs the worker's own ``CommandProcessor`` and
``CommandStore`` in this process against the real PostgreSQL (a fresh schema, migrated by
``state.database.upgrade_schema``, dropped afterwards), fed the benchmark's realistic mix
(``bench.workload``) and flushed every ``--batch`` commands as a checkpoint would be, and
samples this process's own VmRSS. Kafka is left out because its clients' buffers are
bounded by librdkafka's settings, not by the number of commands or users, and a run
through Kafka, with the sandbox services over HTTP, goes at some 150 commands/s here
(hours for a million); ``--through-kafka`` does that run anyway, measuring a real
``payment-worker run`` process (whose cache it cannot see: no gauge exposes it yet).

The gateway and the User Service are in-process stand-ins by default that keep nothing
(an answer is derived from its idempotency key), so that all that grows is the worker's;
``--gateway sandbox`` uses the worker's real HTTP clients (and its profile cache) against
the sandbox services in their own processes, which is slower. The workload is generated
in a child process, because its model of 200,000 users' cards would otherwise be counted
in the RSS being measured.

It prints figures and asserts nothing: every ``--sample-every`` commands, the commands
done, seconds, rate, RSS, and the key-state cache's entries and estimated bytes; then the
peak. Needs the stack (``scripts/stack up``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import re
import signal
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.queues import Queue
from pathlib import Path
from types import FrameType

from sqlalchemy import Engine

from bench.bulk_produce import bulk_producer
from bench.committed_outputs import watch_outputs
from bench.isolation import fresh_schema, fresh_topics, isolated_settings
from bench.procfs import rss_bytes
from bench.sandbox_services import SandboxServices
from bench.workload import WorkloadGenerator
from config.settings import Settings, load_settings
from domain.completion import Completion
from domain.ports import PaymentGateway, ProfileSource
from pipelines.command_processor import CommandProcessor
from pipelines.records import IncomingMessage
from pipelines.version import worker_version
from pipelines.wiring import build_dependencies
from state.command_store import CommandStore, WriteConflicts
from state.database import create_database_engine
from tests.support.fakes import FixedProfiles, MemoryGateway
from tests.support.harness import WorkerProcess
from tests.support.probes import wait_until_ready

MIB = 2**20
SEED = 42
PARTITIONS = 12
# Commands per message between the generating child and this process.
CHUNK = 1_000
SOURCE_TOPIC = "payment.commands"


@dataclass(frozen=True)
class MemoryOptions:
    commands: int = 1_000_000
    users: int = 200_000
    # Commands per checkpoint. The worker ends one every commit_interval_seconds (0.1 s:
    # some 30 commands at its rate, docs/performance.md) or commit_every commands (5,000),
    # whichever comes first; a larger batch stages more at once, so 1,000 errs high.
    batch: int = 1_000
    sample_every: int = 50_000
    seed: int = SEED
    gateway: str = "memory"
    through_kafka: bool = False
    partitions: int = PARTITIONS
    work_dir: Path = Path(".bench/memory-logs")


@dataclass(frozen=True)
class Sample:
    commands: int
    seconds: float
    rss_bytes: int
    cache_keys: int | None
    cache_bytes: int | None


@dataclass
class Report:
    samples: list[Sample] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    high_water_bytes: int = 0

    @property
    def peak(self) -> Sample:
        return max(self.samples, key=lambda sample: sample.rss_bytes)


def _status_value(name: str) -> int:
    """A ``/proc/self/status`` figure in bytes (VmRSS: resident now; VmHWM: its peak)."""
    status = Path("/proc/self/status").read_text()
    found = re.search(rf"^{name}:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


# --- the workload, generated in a child process -----------------------------------------


def _generate(queue: Queue[list[tuple[bytes, bytes]] | None], options: MemoryOptions) -> None:
    generator = WorkloadGenerator(
        users=options.users,
        seed=options.seed,
        link_distance=max(200, options.commands // 2),
        run="mem",
    )
    left = options.commands
    while left > 0:
        chunk = [(c.key, c.value) for c in generator.generate(min(CHUNK, left))]
        left -= len(chunk)
        queue.put(chunk)
    queue.put(None)


@contextmanager
def _workload(options: MemoryOptions) -> Iterator[Iterator[tuple[bytes, bytes]]]:
    """The commands, in order, from a child process. It is forked before this process
    opens any connection or starts a thread, and what it allocates is its own."""
    context = multiprocessing.get_context("fork")
    queue: Queue[list[tuple[bytes, bytes]] | None] = context.Queue(maxsize=20)
    child = context.Process(target=_generate, args=(queue, options), daemon=True)
    child.start()

    def commands() -> Iterator[tuple[bytes, bytes]]:
        while (chunk := queue.get()) is not None:
            yield from chunk

    try:
        yield commands()
        child.join(30)
    finally:
        if child.is_alive():
            child.terminate()
            child.join(10)


# --- the in-process run ---------------------------------------------------------------


def _dependencies(
    settings: Settings, options: MemoryOptions
) -> tuple[Engine, PaymentGateway, ProfileSource]:
    if options.gateway == "memory":
        return create_database_engine(settings), MemoryGateway(remember=False), FixedProfiles()
    # The gateway, the profile lookup and their caches exactly as the worker builds them.
    dependencies = build_dependencies(settings)
    return dependencies.engine, dependencies.gateway, dependencies.profiles


def build_store(settings: Settings, engine: Engine) -> CommandStore:
    """The store with the worker's cache bounds (``pipelines.wiring.build_worker``)."""
    return CommandStore(
        engine,
        cached_keys=settings.state_cache_keys,
        max_cached_bytes=settings.state_cache_max_bytes,
        recent_commands=settings.state_cache_recent_commands,
        conflicts=WriteConflicts(),
    )


def run_in_process(
    settings: Settings, options: MemoryOptions, say: Callable[[str], None]
) -> Report:
    report = Report()
    with ExitStack() as exits:
        commands = exits.enter_context(_workload(options))
        engine, gateway, profiles = _dependencies(settings, options)
        exits.callback(engine.dispose)
        store = build_store(settings, engine)
        exits.callback(store.discard)
        processor = CommandProcessor(
            store,
            Completion(gateway, profiles),
            clock=lambda: datetime.now(UTC),
            consumer_group=settings.consumer_group,
            worker_version=worker_version(),
        )
        offsets = [0] * options.partitions
        done = 0
        started = time.monotonic()

        def sample() -> None:
            entry = Sample(
                commands=done,
                seconds=time.monotonic() - started,
                rss_bytes=_status_value("VmRSS"),
                cache_keys=store.cached_keys,
                cache_bytes=store.cached_bytes,
            )
            report.samples.append(entry)
            say(_row(entry))

        say(_header())
        sample()
        next_sample = options.sample_every
        for key, value in commands:
            partition = zlib.crc32(key) % options.partitions
            message = IncomingMessage(
                SOURCE_TOPIC, partition, offsets[partition], key, value, headers=[]
            )
            offsets[partition] += 1
            for record in processor.process(message):
                if record.destination == "results" and record.value is not None:
                    report.statuses[json.loads(record.value)["status"]] += 1
            done += 1
            if done % options.batch == 0:
                store.flush()
            if done >= next_sample:
                sample()
                next_sample += options.sample_every
        store.flush()
        if report.samples[-1].commands != done:
            sample()
        report.seconds = time.monotonic() - started
        report.high_water_bytes = _status_value("VmHWM")
    return report


# --- through Kafka: a real worker process ------------------------------------------------


def run_through_kafka(
    settings: Settings, options: MemoryOptions, say: Callable[[str], None]
) -> Report:
    report = Report()
    producer = bulk_producer(settings)
    generator = WorkloadGenerator(
        users=options.users,
        seed=options.seed,
        link_distance=max(200, options.commands // 2),
        run="mem",
    )
    say(f"producing {options.commands:,} commands to {settings.topic_commands} ...")
    for _ in range(options.commands):
        command = generator.next()
        while True:
            try:
                producer.produce(settings.topic_commands, key=command.key, value=command.value)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(300) != 0:
        raise RuntimeError("commands were not delivered to Kafka")
    del generator
    worker = WorkerProcess(settings, options.work_dir / "memory-worker.log")
    started = time.monotonic()
    worker.start()
    try:
        wait_until_ready(settings, worker.is_running)
        say(_header())

        def sample(now: float, count: int) -> None:
            entry = Sample(count, now - started, rss_bytes(worker.pid), None, None)
            report.samples.append(entry)
            say(_row(entry))

        sample(time.monotonic(), 0)
        next_sample = options.sample_every

        def on_batch(now: float, count: int) -> None:
            nonlocal next_sample
            if count >= next_sample:
                sample(now, count)
                next_sample += options.sample_every

        watch = watch_outputs(
            settings,
            settings.topic_results,
            expected=options.commands,
            timeout=6 * 3600,
            on_batch=on_batch,
            still_running=worker.is_running,
        )
        if not report.samples or report.samples[-1].commands != watch.count:
            sample(time.monotonic(), watch.count)
        report.statuses["results seen"] = watch.count
        report.seconds = time.monotonic() - started
        report.high_water_bytes = _process_high_water(worker.pid)
    finally:
        worker.stop()
    return report


def _process_high_water(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


# --- output ---------------------------------------------------------------------------


def _header() -> str:
    return (
        f"{'commands':>10} {'seconds':>8} {'cmd/s':>7} {'RSS MiB':>8}"
        f" {'cache keys':>11} {'cache MiB':>10}"
    )


def _row(sample: Sample) -> str:
    rate = f"{sample.commands / sample.seconds:7.0f}" if sample.commands else f"{'-':>7}"
    keys = f"{sample.cache_keys:11,}" if sample.cache_keys is not None else f"{'n/a':>11}"
    cached = (
        f"{sample.cache_bytes / MIB:10.1f}" if sample.cache_bytes is not None else f"{'n/a':>10}"
    )
    return (
        f"{sample.commands:10,} {sample.seconds:8.1f} {rate} {sample.rss_bytes / MIB:8.1f}"
        f" {keys} {cached}"
    )


def summary(report: Report) -> list[str]:
    peak = report.peak
    first = report.samples[0]
    commands = report.samples[-1].commands
    statuses = ", ".join(f"{name} {count:,}" for name, count in sorted(report.statuses.items()))
    return [
        f"RSS at start: {first.rss_bytes / MIB:.1f} MiB;"
        f" at the end: {report.samples[-1].rss_bytes / MIB:.1f} MiB",
        f"peak RSS: {peak.rss_bytes / MIB:.1f} MiB (sampled, at {peak.commands:,} commands);"
        f" VmHWM {report.high_water_bytes / MIB:.1f} MiB",
        f"run time: {report.seconds:.1f} s for {commands:,} commands"
        f" ({commands / max(report.seconds, 1e-9):,.0f} commands/s)",
        f"results: {statuses}",
    ]


# --- command line -----------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    defaults = MemoryOptions()
    parser = argparse.ArgumentParser(
        "python -m bench.memory",
        description="The worker's RSS over a long realistic run (DESIGN.md §6).",
    )
    parser.add_argument("--commands", type=int, default=defaults.commands)
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument(
        "--batch", type=int, default=defaults.batch, help="commands per checkpoint (flush)"
    )
    parser.add_argument("--sample-every", type=int, default=defaults.sample_every)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--gateway",
        choices=("memory", "sandbox"),
        default=defaults.gateway,
        help="in-process stand-ins (default) or the sandbox services over HTTP",
    )
    parser.add_argument(
        "--through-kafka",
        action="store_true",
        help="measure a real `payment-worker run` process fed through Kafka (slow)",
    )
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if min(args.commands, args.users, args.batch, args.sample_every, args.partitions) < 1:
        print("--commands, --users, --batch, --sample-every and --partitions must be >= 1")
        return 2
    # A stopped run still drops its schema (and topics) and stops what it started.
    signal.signal(signal.SIGTERM, _interrupt)
    options = MemoryOptions(
        commands=args.commands,
        users=args.users,
        batch=args.batch,
        sample_every=args.sample_every,
        seed=args.seed,
        gateway="sandbox" if args.through_kafka else args.gateway,
        through_kafka=args.through_kafka,
        partitions=args.partitions,
    )
    options.work_dir.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        print(line, flush=True)

    base = load_settings()
    with ExitStack() as exits:
        services = None
        if options.gateway == "sandbox":
            services = SandboxServices(options.work_dir).start()
            exits.callback(services.stop)
        settings = isolated_settings(
            base, "memory", partitions=options.partitions, services=services
        )
        if options.through_kafka:
            exits.enter_context(fresh_topics(settings))
        exits.enter_context(fresh_schema(settings))
        mode = (
            "through Kafka, a `payment-worker run` process"
            if options.through_kafka
            else ("in process: CommandProcessor + CommandStore on PostgreSQL")
        )
        gateway = (
            "in-memory stand-ins" if options.gateway == "memory" else "sandbox services over HTTP"
        )
        say(
            f"bench.memory: {options.commands:,} commands over {options.users:,} users,"
            f" {mode}; gateway: {gateway}"
        )
        checkpoints = (
            f"the worker's checkpoints ({settings.commit_interval_seconds} s"
            f" or {settings.commit_every:,} commands)"
            if options.through_kafka
            else f"checkpoint every {options.batch:,} commands"
        )
        say(
            f"{checkpoints}; schema {settings.database_schema};"
            f" cache bounds: {settings.state_cache_keys:,} keys,"
            f" {settings.state_cache_max_bytes / MIB:.0f} MiB estimated,"
            f" {settings.state_cache_recent_commands} recent command ids per key"
        )
        run = run_through_kafka if options.through_kafka else run_in_process
        report = run(settings, options, say)
    for line in summary(report):
        say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
