"""``python -m bench``: measure the worker against its baselines on the local stack.

Needs the stack (``scripts/stack up``). ``--smoke`` runs every step at a tiny size in
about a minute, to check the tool itself; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import replace
from pathlib import Path
from types import FrameType

from bench.benchmark import BenchOptions, run_benchmark
from bench.report import judge, render, write_json

SMOKE = BenchOptions(
    commands=300,
    users=30,
    latency_seconds=2.0,
    db_commands=300,
    db_batch=100,
    gateway_users=10,
    worker_seconds=60.0,
    timeout_seconds=60.0,
    drain_seconds=0.5,
    sample_seconds=0.05,
    smoke=True,
)


def _parser() -> argparse.ArgumentParser:
    defaults = BenchOptions()
    parser = argparse.ArgumentParser(
        "python -m bench", description="Benchmark payment-worker against its baselines."
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the tool")
    parser.add_argument("--commands", type=int, help=f"commands (default {defaults.commands:,})")
    parser.add_argument("--users", type=int, help=f"users (default {defaults.users:,})")
    parser.add_argument("--seed", type=int, help=f"workload seed (default {defaults.seed})")
    parser.add_argument(
        "--partitions", type=int, help=f"partitions per topic (default {defaults.partitions})"
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help=f"length of the steady-load run (default {defaults.latency_seconds:.0f})",
    )
    parser.add_argument(
        "--db-commands",
        type=int,
        help=f"commands written by the database baseline (default {defaults.db_commands:,})",
    )
    parser.add_argument(
        "--db-batch",
        type=int,
        help=f"commands per transaction of the database baseline (default {defaults.db_batch:,})",
    )
    parser.add_argument(
        "--gateway-users",
        type=int,
        help="users of the gateway-bound workload, 4 commands each"
        f" (default {defaults.gateway_users:,})",
    )
    parser.add_argument(
        "--gateway-delay-ms",
        type=float,
        help=f"the slow sandbox gateway's answer delay (default {defaults.gateway_delay_ms:g})",
    )
    parser.add_argument(
        "--worker-seconds",
        type=float,
        help="longest measured window of one worker throughput run"
        f" (default {defaults.worker_seconds:.0f})",
    )
    parser.add_argument(
        "--sample-seconds",
        type=float,
        help=f"how often the worker's /metrics is scraped (default {defaults.sample_seconds:g})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(".bench/benchmark.json"),
        help="where to write the JSON report (default .bench/benchmark.json)",
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A stopped run still stops its worker and sandboxes and drops its topics and schemas.
    signal.signal(signal.SIGTERM, _interrupt)
    options = SMOKE if args.smoke else BenchOptions()
    overrides = {
        name: value
        for name, value in {
            "commands": args.commands,
            "users": args.users,
            "seed": args.seed,
            "partitions": args.partitions,
            "latency_seconds": args.latency_seconds,
            "db_commands": args.db_commands,
            "db_batch": args.db_batch,
            "gateway_users": args.gateway_users,
            "gateway_delay_ms": args.gateway_delay_ms,
            "worker_seconds": args.worker_seconds,
            "sample_seconds": args.sample_seconds,
        }.items()
        if value is not None
    }
    # Logs of the worker, the baselines and the sandboxes go beside the report.
    work_dir = args.output.parent / f"{args.output.stem}-logs"
    options = replace(options, work_dir=work_dir, **overrides)
    report = run_benchmark(options)
    report.update(judge(report))
    write_json(report, args.output)
    print(render(report))
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
