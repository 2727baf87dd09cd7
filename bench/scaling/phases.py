"""Driving a scaling run: the workers started and stopped, the phases held, the group
waited for until it settles, the load drained; then the report made of what it recorded.

The order is fixed (see ``bench.scaling``): w1, w2 and w3 join, w1 and w2 leave, w3 drains
and leaves. A worker that exits on its own, or with another code than 0 after SIGTERM, is a
violation, as is a group that does not settle.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

from bench.scaling.checks import verify
from bench.scaling.config import ScalingConfig
from bench.scaling.measure import change_reports, phase_reports
from bench.scaling.members import Member, MetricsPoller, has_partitions
from bench.scaling.report import ScalingReport
from bench.scaling.timeline import Change, Timeline
from bench.scaling.traffic import LoadProducer, ResultTailer
from bench.scaling.workload import Workload
from config.settings import Settings
from tests.support.harness import WorkerProcess, free_port

logger = logging.getLogger("bench.scaling")


class ScalingRun:
    """Drives the group through the phases under the load, recording when each phase and
    change happened (``timeline``) and what went wrong with the workers (``violations``)."""

    def __init__(self, settings: Settings, config: ScalingConfig, work_dir: Path) -> None:
        self.settings = settings
        self.config = config
        self.work_dir = work_dir
        self.members: list[Member] = []
        self.producer = LoadProducer(settings, config.rate, Workload(config.users, config.seed))
        self.tailer = ResultTailer(settings)
        self.poller = MetricsPoller(self.members)
        self.timeline = Timeline()
        self.violations: list[str] = []

    # Membership -----------------------------------------------------------------------

    def start_member(self, name: str) -> Member:
        port = free_port()
        worker_settings = self.settings.model_copy(
            update={
                "metrics_port": port,
                "quixstreams_state_dir": self.work_dir / f"{name}-state",
            }
        )
        process = WorkerProcess(
            worker_settings, self.work_dir / f"{name}.log", die_with_parent=True
        )
        member = Member(name, process, port)
        logger.info("starting %s (metrics on port %d)", name, port)
        member.started_at = time.monotonic()
        member.process.start()
        self.members.append(member)
        return member

    def stop_member(self, member: Member) -> None:
        logger.info("SIGTERM to %s", member.name)
        member.stop_sent_at = time.monotonic()
        member.exit_code = member.process.stop(timeout=60)
        member.exited_at = time.monotonic()
        if member.exit_code != 0:
            self.violations.append(
                f"{member.name} exited with code {member.exit_code} after SIGTERM (expected 0)"
            )

    def live_members(self) -> list[Member]:
        return [m for m in self.members if m.stop_sent_at is None]

    def check_alive(self) -> None:
        for member in self.live_members():
            if not member.process.is_running():
                self.violations.append(
                    f"{member.name} died on its own: see {member.process.log_path}"
                )
                member.stop_sent_at = time.monotonic()

    # Phases ---------------------------------------------------------------------------

    def wait_for_first_result(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.tailer.snapshot():
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no result within {timeout:.0f} s of starting w1: see {self.work_dir}/w1.log"
                )
            self.check_alive()
            time.sleep(0.1)

    def wait_until_caught_up(self) -> None:
        """Let w1 work off the backlog of its start-up, so phase 1 is a steady baseline:
        every command produced more than a second ago has a visible result."""
        timeout = self.config.catch_up_timeout_seconds
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            produced = self.producer.produced_between(self.timeline.origin, time.monotonic() - 1.0)
            if self.tailer.seen_all([command_id for command_id, _ in produced]):
                return
            time.sleep(0.5)
        logger.info("w1 did not catch up with the load within %.0f s; going on", timeout)

    def phase_name(self) -> str:
        return f"{len(self.timeline.phase_marks) + 1}: " + " ".join(
            m.name for m in self.live_members()
        )

    def hold_phase(self, name: str) -> None:
        self.timeline.phase_marks.append((name, time.monotonic()))
        logger.info("phase %s", name)
        deadline = time.monotonic() + self.config.phase_seconds
        while time.monotonic() < deadline:
            time.sleep(0.2)
        self.check_alive()
        self.timeline.phase_ends.append(self.snapshot_members())

    def snapshot_members(self) -> tuple[dict[str, int], dict[str, int]]:
        assignment: dict[str, int] = {}
        rebalances: dict[str, int] = {}
        for member in self.live_members():
            latest = member.latest()
            assignment[member.name] = latest.assigned if latest else -1
            rebalances[member.name] = latest.rebalances if latest else -1
        return assignment, rebalances

    def run(self) -> ScalingReport:
        self.tailer.start()
        self.poller.start()
        first = self.start_member("w1")
        self.producer.start()
        self.wait_for_first_result()
        self.wait_until_caught_up()
        time.sleep(self.config.warmup_seconds)
        self.hold_phase(self.phase_name())
        for name in ("w2", "w3"):
            member = self.start_member(name)
            change = Change(f"{name} joins", member.started_at, member)
            self.timeline.changes.append(change)
            self.wait_until_settled(change)
            self.hold_phase(self.phase_name())
        for member in (first, self.members[1]):
            change = Change(f"{member.name} leaves", time.monotonic(), member)
            self.timeline.changes.append(change)
            self.stop_member(member)
            self.wait_until_settled(change)
            self.hold_phase(self.phase_name())
        self.timeline.load_stopped_at = time.monotonic()
        self.producer.stop()
        self.drain()
        last = self.members[2]
        self.stop_member(last)
        self.poller.stop()
        self.tailer.stop()
        return self.report()

    def wait_until_settled(self, change: Change, timeout: float = 90.0) -> None:
        """Wait until the live workers' /metrics show every partition assigned among them,
        each worker having some, so that phases measure a settled group."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            latest = [m.latest() for m in self.live_members()]
            fresh = [s.assigned for s in latest if s is not None and s.at > change.at]
            spread = fresh and len(fresh) == len(latest) and min(fresh) > 0
            if spread and sum(fresh) == self.config.partitions:
                change.settled_at = time.monotonic()
                return
            time.sleep(0.1)
        self.violations.append(
            f"after '{change.name}' the partitions were not spread over the live workers "
            f"within {timeout:.0f} s"
        )

    def drain(self) -> None:
        commands = list(self.producer.commands)
        logger.info("load stopped after %d commands; waiting for every result", len(commands))
        deadline = time.monotonic() + self.config.drain_timeout_seconds
        next_note = time.monotonic() + 10
        while not self.tailer.seen_all(commands):
            if time.monotonic() > next_note:
                next_note += 10
                logger.info("%d results visible", len(self.tailer.command_ids))
            if time.monotonic() > deadline:
                self.violations.append(
                    f"not every result was visible {self.config.drain_timeout_seconds:.0f} s "
                    "after the load stopped"
                )
                return
            self.check_alive()
            time.sleep(0.2)

    # Report ---------------------------------------------------------------------------

    def report(self) -> ScalingReport:
        report = ScalingReport(
            config=asdict(self.config),
            names={
                "commands": self.settings.topic_commands,
                "events": self.settings.topic_events,
                "results": self.settings.topic_results,
                "group": self.settings.consumer_group,
                "schema": self.settings.database_schema,
                "logs": str(self.work_dir),
            },
        )
        visible = sorted(self.tailer.snapshot(), key=lambda r: r.seen_at)
        report.phases = phase_reports(self.timeline, self.producer, visible)
        report.changes = change_reports(self.timeline, self.producer, visible)
        report.checks, violations = verify(self.settings, self.producer)
        report.violations = (
            self.violations
            + [f"producer: {error}" for error in self.producer.delivery_errors]
            + violations
        )
        if report.phases and report.phases[0].visible_per_second < 0.9 * self.config.rate:
            report.notes.append(
                f"one worker made {report.phases[0].visible_per_second:g} results/s visible "
                f"against {self.config.rate:g}/s produced: the load exceeds its capacity on "
                "this machine now, so latencies and pauses include a growing backlog; "
                "lower --rate"
            )
        for change in self.timeline.changes:
            if change.is_join and change.member.first_sample_at(has_partitions) is None:
                report.violations.append(f"{change.member.name} joined but got no partition")
        return report
