"""``python -m bench.scaling``: the options, the run, the printed report and the JSON one.

The exit code is 0 when every check passed, 1 otherwise. SIGTERM stops a run cleanly (its
workers stopped, its topics and schema dropped).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import tempfile
from pathlib import Path
from types import FrameType

from bench.scaling.config import ScalingConfig
from bench.scaling.render import render
from bench.scaling.run import run_scaling
from config.settings import load_settings

logger = logging.getLogger("bench.scaling")


def _parser() -> argparse.ArgumentParser:
    defaults = ScalingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m bench.scaling",
        description="One worker under load, then two and three in its group, then back to one; "
        "checks exactly-once and measures the pause at each rebalance.",
    )
    parser.add_argument("--rate", type=float, default=defaults.rate, help="commands per second")
    parser.add_argument("--users", type=int, default=defaults.users)
    parser.add_argument(
        "--commands",
        type=int,
        help="about this many commands in all: sets --phase-seconds from --rate",
    )
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--phase-seconds", type=float, default=defaults.phase_seconds)
    parser.add_argument(
        "--catch-up-timeout",
        type=float,
        default=defaults.catch_up_timeout_seconds,
        dest="catch_up",
        help="how long w1 may take to work off the backlog of its start-up",
    )
    parser.add_argument("--warmup-seconds", type=float, default=defaults.warmup_seconds)
    parser.add_argument(
        "--drain-timeout", type=float, default=defaults.drain_timeout_seconds, dest="drain"
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", action="store_true", help="keep topics and schema afterwards")
    parser.add_argument("--log-dir", type=Path, help="worker logs (default: a new temp dir)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # A stopped run still stops its workers and drops its topics and schema.
    signal.signal(signal.SIGTERM, _interrupt)
    phase_seconds = args.phase_seconds
    if args.commands is not None:
        phase_seconds = max(5.0, (args.commands / args.rate - args.warmup_seconds) / 5)
    config = ScalingConfig(
        rate=args.rate,
        users=args.users,
        partitions=args.partitions,
        catch_up_timeout_seconds=args.catch_up,
        warmup_seconds=args.warmup_seconds,
        phase_seconds=phase_seconds,
        drain_timeout_seconds=args.drain,
        keep=args.keep,
        seed=args.seed,
    )
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logger.setLevel(logging.INFO)
    work_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="payment-worker-scaling-"))
    work_dir.mkdir(parents=True, exist_ok=True)
    report = run_scaling(load_settings(), config, work_dir)
    print(render(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 0 if report.passed else 1
