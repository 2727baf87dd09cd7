"""Checking the outcome against the model: a read_committed read of every output topic and
the PostgreSQL inbox, compared with what the producer sent (any difference is a violation).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select

from bench.scaling.report import Checks
from bench.scaling.traffic import LoadProducer, ProducedCommand
from config.settings import Settings
from state.database import create_database_engine
from state.tables import processed_commands
from tests.support.harness import read_topic


def verify(settings: Settings, producer: LoadProducer) -> tuple[Checks, list[str]]:
    """Compare a read_committed read of every output topic and Postgres with the model."""
    produced = producer.commands
    checks = Checks(
        commands=len(produced),
        expected_events=sum(c.expected_events for c in produced.values()),
        users=len({c.user_id for c in produced.values()}),
    )
    results = [
        r.json()
        for r in read_topic(
            settings, settings.topic_results, expected=len(produced), timeout=120, settle=3
        )
    ]
    events = [
        e.json()
        for e in read_topic(
            settings, settings.topic_events, expected=checks.expected_events, timeout=120, settle=3
        )
    ]
    checks.results, checks.events = len(results), len(events)
    checks.accepted = sum(1 for r in results if r["status"] == "accepted")
    checks.dead_letters = len(read_topic(settings, settings.topic_dlq, expected=0, settle=3))
    checks.inbox_rows = inbox_rows(settings)
    violations = [
        *result_violations(produced, results),
        *event_violations(produced, results, events),
    ]
    if checks.dead_letters:
        violations.append(f"{checks.dead_letters} records were dead-lettered")
    if checks.inbox_rows != len(produced):
        violations.append(
            f"Postgres inbox holds {checks.inbox_rows} rows for {len(produced)} commands"
        )
    return checks, violations


def result_violations(
    produced: dict[str, ProducedCommand], results: Sequence[dict[str, Any]]
) -> list[str]:
    """Exactly one result per produced command, and every one accepted."""
    violations: list[str] = []
    counts = Counter(str(r["commandId"]) for r in results)
    missing = set(produced) - set(counts)
    if missing:
        violations.append(f"{len(missing)} commands have no result, e.g. {sorted(missing)[:3]}")
    duplicated = sum(1 for n in counts.values() if n > 1)
    if duplicated:
        violations.append(f"{duplicated} commands have more than one result")
    unknown = set(counts) - set(produced)
    if unknown:
        violations.append(f"{len(unknown)} results for commands this run did not produce")
    statuses = Counter(f"{r['status']}:{r.get('reason')}" for r in results)
    if any(r["status"] != "accepted" for r in results):
        violations.append(f"not every command was accepted: {dict(statuses)}")
    return violations


def event_violations(
    produced: dict[str, ProducedCommand],
    results: Sequence[dict[str, Any]],
    events: Sequence[dict[str, Any]],
) -> list[str]:
    """Each announced event exactly once, nothing else, and per-user sequences 1..n."""
    violations: list[str] = []
    announced = {str(e) for r in results for e in r.get("eventIds", [])}
    counts = Counter(str(e["eventId"]) for e in events)
    repeated = sum(1 for n in counts.values() if n > 1)
    if repeated:
        violations.append(f"{repeated} event ids appear more than once")
    if set(counts) != announced:
        violations.append(
            f"events and results disagree: {len(announced - set(counts))} announced events "
            f"missing, {len(set(counts) - announced)} events that no result names"
        )
    expected = sum(c.expected_events for c in produced.values())
    if len(events) != expected:
        violations.append(f"{len(events)} events, the model expects {expected}")
    expected_per_user: Counter[str] = Counter()
    for command in produced.values():
        expected_per_user[command.user_id] += command.expected_events
    # Read in partition order, and a user's events are all on one partition.
    sequences: dict[str, list[int]] = defaultdict(list)
    for event in events:
        sequences[str(event["userId"])].append(int(event["sequence"]))
    broken = [
        user
        for user, count in expected_per_user.items()
        if sequences.get(user) != list(range(1, count + 1))
    ]
    if broken:
        violations.append(
            f"{len(broken)} users' event sequences are not 1..n in order, e.g. {broken[:3]}"
        )
    return violations


def inbox_rows(settings: Settings) -> int:
    engine = create_database_engine(settings)
    try:
        with engine.connect() as connection:
            count: int = connection.execute(
                select(func.count()).select_from(processed_commands)
            ).scalar_one()
            return count
    finally:
        engine.dispose()
