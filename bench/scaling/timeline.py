"""When things happened in a scaling run: each phase's start and the group at its end,
each membership change and when the group settled after it, and when the load stopped.

The run writes it as it goes; the measurements (``bench.scaling.measure``) read it
afterwards, together with the producer's and the tailer's records. All times are
``time.monotonic()``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.scaling.members import Member


@dataclass
class Change:
    """A worker joining or leaving the group, and when the group settled after it."""

    name: str  # "w2 joins", "w1 leaves"
    at: float
    member: Member
    settled_at: float | None = None

    @property
    def is_join(self) -> bool:
        return self.name.endswith("joins")


@dataclass
class Timeline:
    origin: float = field(default_factory=time.monotonic)
    # (name, start) of each phase; the end of the last one is when the load stops.
    phase_marks: list[tuple[str, float]] = field(default_factory=list)
    load_stopped_at: float = 0.0
    changes: list[Change] = field(default_factory=list)
    # (assignment, rebalances) per live worker at the end of each phase.
    phase_ends: list[tuple[dict[str, int], dict[str, int]]] = field(default_factory=list)

    def window_end(self, start: float) -> float:
        """The next change after ``start``, or when the load stopped."""
        later = [change.at for change in self.changes if change.at > start]
        return min([*later, self.load_stopped_at])
