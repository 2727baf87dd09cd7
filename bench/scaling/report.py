"""The scaling report: per phase, per membership change, the checks against the model and
the verdict; plain dataclasses, so the JSON report is ``asdict`` of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class PhaseReport:
    name: str
    workers: list[str]
    started_at: float  # seconds since the run started
    seconds: float
    produced: int
    visible: int
    visible_per_second: float
    latency_p50: float | None
    latency_p99: float | None
    latency_max: float | None
    unseen: int  # produced in this phase, result not visible by the end of the run
    longest_gap: float  # all partitions
    longest_partition_gap: float  # the worst partition
    assignment: dict[str, int]  # worker → partitions, at the end of the phase
    rebalances: dict[str, int]  # worker → rebalances it took part in, so far


@dataclass(frozen=True)
class ChangeReport:
    change: str  # "w2 joins", "w1 leaves"
    at: float  # seconds since the run started
    pause: float  # the worst partition's stall
    pause_partition: int | None
    pause_began: float  # relative to the change
    all_partitions_stall: float
    max_latency: float | None
    settled_after: float | None
    assigned_after: float | None = None  # joins
    first_command_after: float | None = None  # joins
    exit_after: float | None = None  # leaves
    exit_code: int | None = None  # leaves


@dataclass
class Checks:
    commands: int = 0
    results: int = 0
    accepted: int = 0
    events: int = 0
    expected_events: int = 0
    dead_letters: int = 0
    inbox_rows: int = 0
    users: int = 0


@dataclass
class ScalingReport:
    config: dict[str, Any]
    names: dict[str, str]  # topics, group, schema, logs
    phases: list[PhaseReport] = field(default_factory=list)
    changes: list[ChangeReport] = field(default_factory=list)
    checks: Checks = field(default_factory=Checks)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # about the measurement, not the worker

    @property
    def passed(self) -> bool:
        return not self.violations

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": "pass" if self.passed else "FAIL"}
