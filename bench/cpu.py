"""``python -m bench.cpu``: the pure CPU cost of one command, per command type and per stage.

DESIGN.md §6 bounds pure decode + decide + encode at 40 us per command. This measures the
four stages as ``pipelines/command_processor.py`` runs them, with no broker, database or
gateway, so that a regression in one of them is visible on its own:

* decode: ``decode_command(raw, key, now=..., max_future_skew=...)`` (strict JSON, the
  card-number scan, the key checks, the pydantic models);
* hash: ``canonical_sha256(command)``, the digest kept in the inbox;
* decide: ``decide(command, state, now)``;
* encode: ``to_wire()`` and ``kafka_headers()`` of each event, and the result's ``to_wire()``.

The commands are the benchmark's realistic mix (``bench.workload``), and each is decided on
the state its user has at that point of the run (the run is replayed in memory first), so a
rejection costs what a rejection costs. The baseline is a bare pydantic
``model_validate_json`` of the same bytes, measured in the same run: absolute figures vary
from machine to machine, the ratio much less.

Each figure is CPU time (this thread's), summed over chunks of ``CHUNK`` commands of the
type, each chunk at its best of ``--repeat`` passes, the stages and the baseline taking
turns chunk by chunk (see ``measure``); garbage collection is off while timing, as in
``timeit``. "in a row" runs the four stages one command after the other, as the pipeline
does: it costs more than the sum of the stages, since each command then runs all of their
code (the caches hold less of it). ``--profile TYPE`` prints where the time of that type
goes instead (cProfile over all four stages).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from bench.workload import ISSUED_AT, generate_workload
from domain.decisions import decide
from domain.model import Decision, KeyState
from domain.streams import stream_key
from schemas.canonical import canonical_sha256
from schemas.commands import COMMAND_TYPES, Command, named_payment_ids, named_payment_method_ids
from schemas.decoding import DEFAULT_MAX_FUTURE_SKEW, decode_command
from tests.support.fakes import MemoryStore

# The worker's clock: after every issuedAt of the run, well inside the cards' validity.
NOW = ISSUED_AT + timedelta(minutes=1)
STAGES = ("decode", "hash", "decide", "encode")
TARGET_US = 40.0
# Commands per timed pass (see measure).
CHUNK = 20


@dataclass(slots=True)
class Sample:
    """One command as the pipeline sees it: bytes and key, and the state it is decided on."""

    raw: bytes
    key: bytes
    command: Command
    state: KeyState
    decision: Decision


@dataclass(slots=True)
class TypeFigures:
    command_type: str
    samples: int
    stages_us: dict[str, float] = field(default_factory=dict)
    together_us: float = 0.0
    bare_validate_us: float = 0.0

    @property
    def total_us(self) -> float:
        return sum(self.stages_us.values())


def _replayed_samples(commands: int, users: int, seed: int) -> dict[str, list[Sample]]:
    """The workload decided in order, each command with the state it was decided on."""
    store = MemoryStore()
    by_type: dict[str, list[Sample]] = {name: [] for name in COMMAND_TYPES}
    for item in generate_workload(commands, users, seed):
        command = decode_command(item.value, item.key, now=NOW)
        key = stream_key(command)
        if key is None:
            continue
        state = store.key_state(key, named_payment_method_ids(command), named_payment_ids(command))
        decision = decide(command, state, NOW)
        by_type[command.type].append(Sample(item.value, item.key, command, state, decision))
        store.apply(key, decision)
    return by_type


# --- the stages, each over a list of samples -----------------------------------------------


def _decode(samples: Sequence[Sample]) -> None:
    for sample in samples:
        decode_command(sample.raw, sample.key, now=NOW, max_future_skew=DEFAULT_MAX_FUTURE_SKEW)


def _hash(samples: Sequence[Sample]) -> None:
    for sample in samples:
        canonical_sha256(sample.command)


def _decide(samples: Sequence[Sample]) -> None:
    for sample in samples:
        decide(sample.command, sample.state, NOW)


def _encode(samples: Sequence[Sample]) -> None:
    for sample in samples:
        decision = sample.decision
        for event in decision.events:
            event.to_wire()
            event.kafka_headers()
        decision.result.to_wire()


def _together(samples: Sequence[Sample]) -> None:
    """All four stages one command after the other, as the pipeline runs them."""
    for sample in samples:
        command = decode_command(
            sample.raw, sample.key, now=NOW, max_future_skew=DEFAULT_MAX_FUTURE_SKEW
        )
        canonical_sha256(command)
        decision = decide(command, sample.state, NOW)
        for event in decision.events:
            event.to_wire()
            event.kafka_headers()
        decision.result.to_wire()


def _bare_validate(samples: Sequence[Sample]) -> None:
    for sample in samples:
        COMMAND_TYPES[sample.command.type].model_validate_json(sample.raw)


_STAGE_FUNCTIONS: dict[str, Callable[[Sequence[Sample]], None]] = {
    "decode": _decode,
    "hash": _hash,
    "decide": _decide,
    "encode": _encode,
}


def _timed_ns(run: Callable[[Sequence[Sample]], None], chunk: Sequence[Sample]) -> int:
    started = time.thread_time_ns()
    run(chunk)
    return time.thread_time_ns() - started


def measure(by_type: dict[str, list[Sample]], repeat: int, limit: int) -> list[TypeFigures]:
    """Microseconds of CPU per command, per type and stage.

    The machine's neighbours (other processes, other virtual machines) slow some passes
    down. So each figure is the sum, over chunks of ``CHUNK`` commands, of the chunk's
    best of ``repeat`` passes in a row, and the stages and the baseline take turns chunk
    by chunk, so that a slow spell of the machine hits them alike. (Passes of one stage
    follow each other so that each runs with its own code in the caches, as the baseline
    does: interleaving every pass made the baseline pay for the stages' code.) CPU time
    of this thread: being scheduled out does not count. Garbage collection is off while
    timing, as in ``timeit``.
    """
    runs = {**_STAGE_FUNCTIONS, "together": _together, "bare": _bare_validate}
    figures = []
    enabled = gc.isenabled()
    for command_type, all_samples in by_type.items():
        samples = all_samples[:limit]
        if not samples:
            continue
        for run in runs.values():
            run(samples)  # warm-up: caches, lazily built validators
        totals = dict.fromkeys(runs, 0)
        gc.disable()
        try:
            for start in range(0, len(samples), CHUNK):
                chunk = samples[start : start + CHUNK]
                for name, run in runs.items():
                    totals[name] += min(_timed_ns(run, chunk) for _ in range(repeat))
        finally:
            if enabled:
                gc.enable()
        per_command = {name: total / 1000 / len(samples) for name, total in totals.items()}
        figures.append(
            TypeFigures(
                command_type,
                len(samples),
                stages_us={stage: per_command[stage] for stage in STAGES},
                together_us=per_command["together"],
                bare_validate_us=per_command["bare"],
            )
        )
    return figures


def render(figures: Sequence[TypeFigures], shares: dict[str, int]) -> str:
    header = (
        f"{'command type':<24}{'n':>6}"
        + "".join(f"{stage:>9}" for stage in STAGES)
        + f"{'total':>9}{'in a row':>10}{'bare pyd':>10}{'ratio':>7}"
    )
    lines = ["pure CPU per command, microseconds (best pass)", header, "-" * len(header)]
    for row in figures:
        lines.append(
            f"{row.command_type:<24}{row.samples:>6}"
            + "".join(f"{row.stages_us[stage]:>9.1f}" for stage in STAGES)
            + f"{row.total_us:>9.1f}{row.together_us:>10.1f}{row.bare_validate_us:>10.1f}"
            + f"{row.total_us / row.bare_validate_us:>6.1f}x"
        )
    weight = sum(shares.get(row.command_type, 0) for row in figures)
    if weight:
        mix = {
            stage: sum(r.stages_us[stage] * shares.get(r.command_type, 0) for r in figures) / weight
            for stage in STAGES
        }
        mix_total = sum(mix.values())
        mix_together = sum(r.together_us * shares.get(r.command_type, 0) for r in figures) / weight
        mix_bare = sum(r.bare_validate_us * shares.get(r.command_type, 0) for r in figures) / weight
        lines.append("-" * len(header))
        lines.append(
            f"{'workload mix':<24}{weight:>6}"
            + "".join(f"{mix[stage]:>9.1f}" for stage in STAGES)
            + f"{mix_total:>9.1f}{mix_together:>10.1f}{mix_bare:>10.1f}"
            + f"{mix_total / mix_bare:>6.1f}x"
        )
    lines.append("")
    lines.append(
        "total: the sum of the stages; in a row: the four stages one command after the other;"
    )
    lines.append(
        "bare pyd: model_validate_json of the same bytes (baseline); ratio: total / bare pyd."
    )
    lines.append(
        f"DESIGN.md §6: decode + hash + decide + encode <= {TARGET_US:.0f} us per command."
    )
    return "\n".join(lines)


def profile(samples: Sequence[Sample], passes: int, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(passes):
        _together(samples)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        "python -m bench.cpu",
        description="Pure CPU cost of decode, hash, decide and encode, per command type.",
    )
    parser.add_argument(
        "--commands", type=int, default=20_000, help="workload size to replay (default 20,000)"
    )
    parser.add_argument("--users", type=int, default=2_000, help="users (default 2,000)")
    parser.add_argument("--seed", type=int, default=7, help="workload seed (default 7)")
    parser.add_argument(
        "--limit",
        type=int,
        default=2_000,
        help="commands measured per type, at most (default 2,000)",
    )
    parser.add_argument(
        "--repeat",
        "--iterations",
        type=int,
        default=10,
        help="timed passes per figure; the best is kept (default 10)",
    )
    parser.add_argument(
        "--type", action="append", choices=sorted(COMMAND_TYPES), help="only these types"
    )
    parser.add_argument(
        "--profile",
        metavar="TYPE",
        choices=sorted(COMMAND_TYPES),
        help="print a cProfile of this type's four stages instead of the table",
    )
    parser.add_argument("--top", type=int, default=30, help="functions shown by --profile")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    by_type = _replayed_samples(options.commands, options.users, options.seed)
    shares = {name: len(samples) for name, samples in by_type.items()}
    if options.profile:
        samples = by_type[options.profile][: options.limit]
        if not samples:
            print(f"the workload holds no {options.profile}", file=sys.stderr)
            return 1
        print(profile(samples, options.repeat, options.top))
        return 0
    if options.type:
        by_type = {name: by_type[name] for name in options.type}
    print(render(measure(by_type, options.repeat, options.limit), shares))
    return 0


if __name__ == "__main__":
    sys.exit(main())
