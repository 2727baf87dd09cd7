"""The fences that keep a stale writer from writing, and what failed checkpoints taught.

A worker's cached key states may be stale (another worker took its partitions while it
was paused), so every checkpoint's write is fenced, and fails whole if another writer
came first (decision 0005):

- a key's event sequence is its version: it is advanced only from the value this worker
  read (a conditional UPDATE; a new key is a plain INSERT), and a key decided on but not
  advanced must still be at that version (``check_unchanged_keys``);
- the inbox takes a command id once (its primary key, ``ON CONFLICT DO NOTHING ...
  RETURNING``): an id another writer stored first fails the checkpoint, even one that
  was never in this worker's cache;
- payments, shared across keys, are updated only if still as read.

A failed checkpoint raises ``ConcurrentWriteError``; the pipeline restarts from its last
commit with an empty cache. The ids that clashed are remembered in ``WriteConflicts``,
which outlives the restart, so the retry looks them up instead of deciding them again.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import Connection

from domain.errors import TransientError
from state.errors import database_errors


class ConcurrentWriteError(TransientError):
    """Another worker wrote first; this checkpoint is retried from its first command."""


class UnstorableBatch(TransientError):
    """PostgreSQL refused a value of one of this checkpoint's commands; the checkpoint is
    retried from its first command, writing each of them alone (``WriteConflicts``)."""


def fenced_database_errors() -> AbstractContextManager[None]:
    """``state.errors.database_errors``, a conflict being a ``ConcurrentWriteError``."""
    return database_errors(ConcurrentWriteError)


@dataclass(slots=True)
class WriteConflicts:
    """What failed checkpoints taught; it outlives a pipeline restart.

    ``command_ids``: ids another writer stored first, so the retried checkpoint reads
    their stored outcome instead of deciding them again. ``suspects``: the commands of
    a checkpoint that PostgreSQL refused as unstorable; the retry writes each of them
    in a transaction of its own, so that only the one at fault is dead-lettered.
    """

    command_ids: set[UUID] = field(default_factory=set)
    suspects: set[UUID] = field(default_factory=set)

    def remember(self, command_ids: Iterable[UUID]) -> None:
        _bounded_update(self.command_ids, command_ids)

    def suspect(self, command_ids: Iterable[UUID]) -> None:
        _bounded_update(self.suspects, command_ids)


def _bounded_update(remembered: set[UUID], command_ids: Iterable[UUID]) -> None:
    if len(remembered) > _MAX_REMEMBERED_CONFLICTS:
        # Bounded memory; forgetting only costs another failed checkpoint.
        remembered.clear()
    remembered.update(command_ids)


_MAX_REMEMBERED_CONFLICTS = 100_000


def check_unchanged_keys(
    connection: Connection,
    decided: Iterable[str],
    advanced: Container[str],
    read_versions: Mapping[str, int],
) -> None:
    """Keys decided on but not advanced must still be at the version this worker read."""
    unchanged = [key for key in decided if key not in advanced]
    if not unchanged:
        return
    moved = connection.execute(
        text(
            "SELECT v.key FROM unnest(CAST(:keys AS text[]), CAST(:reads AS bigint[]))"
            " AS v(key, read) LEFT JOIN stream_sequences AS e ON e.stream_key = v.key"
            " WHERE coalesce(e.last_sequence, 0) <> v.read"
        ),
        {"keys": unchanged, "reads": [read_versions[key] for key in unchanged]},
    ).first()
    if moved is not None:
        raise ConcurrentWriteError("another writer advanced a key of this batch")
