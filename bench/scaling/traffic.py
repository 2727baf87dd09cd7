"""The load and what became of it: a producer thread sending the workload at a steady
rate (remembering when it sent each command), and a read_committed tailer of the results
topic (noting when each result became visible). Every measurement is made from these two
records."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.scaling.workload import Workload
from config.settings import Settings
from pipelines.kafka_clients import command_producer, topic_reader


@dataclass(frozen=True)
class ProducedCommand:
    user_id: str
    produced_at: float  # time.monotonic()
    expected_events: int


class LoadProducer(threading.Thread):
    """Produces the workload at a steady rate until stopped; remembers what it sent."""

    def __init__(self, settings: Settings, rate: float, workload: Workload) -> None:
        super().__init__(name="scaling-producer", daemon=True)
        self._settings = settings
        self._rate = rate
        self._workload = workload
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.commands: dict[str, ProducedCommand] = {}
        self.delivery_errors: list[str] = []

    def run(self) -> None:
        producer = command_producer(self._settings)
        started = time.monotonic()
        sent = 0
        while not self._stop_event.is_set():
            due = int((time.monotonic() - started) * self._rate)
            while sent < due:
                planned = self._workload.next_command(datetime.now(UTC))
                producer.produce(
                    self._settings.topic_commands,
                    key=planned.user_id.encode(),
                    value=planned.value,
                    on_delivery=self._delivered,
                )
                with self._lock:
                    self.commands[planned.command_id] = ProducedCommand(
                        planned.user_id, time.monotonic(), planned.expected_events
                    )
                sent += 1
            producer.poll(0)
            time.sleep(0.005)
        if producer.flush(30) != 0:
            self.delivery_errors.append("commands still unsent after 30 s")

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.delivery_errors.append(str(error))

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def produced_between(self, start: float, end: float) -> list[tuple[str, float]]:
        with self._lock:
            return [
                (command_id, c.produced_at)
                for command_id, c in self.commands.items()
                if start <= c.produced_at < end
            ]


@dataclass(frozen=True)
class VisibleResult:
    seen_at: float  # time.monotonic() when the read_committed tailer received it
    partition: int
    command_id: str


class ResultTailer(threading.Thread):
    """Reads the results topic live as a read_committed consumer, noting arrival times."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="scaling-tailer", daemon=True)
        self._consumer = topic_reader(settings, settings.topic_results, from_beginning=True)
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.results: list[VisibleResult] = []
        self.command_ids: set[str] = set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                for message in self._consumer.consume(500, 0.05):
                    if message.error() is not None:
                        continue
                    seen_at = time.monotonic()
                    command_id = str(json.loads(message.value())["commandId"])
                    with self._lock:
                        self.results.append(VisibleResult(seen_at, message.partition(), command_id))
                        self.command_ids.add(command_id)
        finally:
            self._consumer.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def snapshot(self) -> list[VisibleResult]:
        with self._lock:
            return list(self.results)

    def seen_all(self, command_ids: Sequence[str]) -> bool:
        with self._lock:
            return all(command_id in self.command_ids for command_id in command_ids)
