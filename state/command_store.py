"""Reads what decisions need and writes a whole checkpoint's decisions in one transaction.

Decisions of one checkpoint are kept in memory until the checkpoint commits: a command
must see the effects of the commands before it in the same batch, and Postgres is
written once per checkpoint (one transaction), not once per command. The Kafka
transaction of the same checkpoint commits only after this write succeeds; if it then
fails, the redelivered commands find their stored outcome in the inbox and re-emit it.

A key's state, and the ids of its newest commands, stay cached across checkpoints while
this worker keeps them: reading them once per key instead of once per command is what
lets the worker keep up. The cache is safe without knowing about rebalances, because
every write is fenced. A key's event sequence is its version: a checkpoint advances it
only from the value it read (``UPDATE ... WHERE last_sequence = read``), and the inbox
takes a command id only once. If another worker wrote in between, for example while this
one was paused and lost its partitions, the checkpoint fails, and the pipeline restarts
from its last commit with an empty cache. Ids that clashed are remembered in
``WriteConflicts``, which outlives the restart, so the retry looks them up instead of
deciding them again.

``CommandStore`` is what the processor uses; each of its jobs is a module of its own:

- ``state.key_state_cache``: each key's committed state and newest command ids, bounded
  by keys and by estimated bytes (memory is bounded by what is cached, not by how many
  commands or users go by);
- ``state.key_state_reads``: key states read through the cache, many keys in one query,
  and a batch's read-ahead of its inbox rows and of the payment methods and payments its
  commands name;
- ``state.inbox``: the processed commands, with their outcomes as published;
- ``state.checkpoint_staging``: the checkpoint's decisions, staged over the committed
  key states;
- ``state.checkpoint_writes``: the staged decisions written in one transaction;
- ``state.write_fences``: the fences of those writes, and what failed checkpoints
  taught (``WriteConflicts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

from sqlalchemy import Engine

from domain.errors import TransientError
from domain.model import Decision, KeyState
from schemas.errors import InvalidMessage
from state.checkpoint_staging import CheckpointStaging
from state.checkpoint_writes import write_checkpoint
from state.inbox import ProcessedCommand, read_stored_outcome
from state.key_state_cache import KeyStateCache
from state.key_state_reads import KeyStateReads
from state.write_fences import (
    ConcurrentWriteError,
    UnstorableBatch,
    WriteConflicts,
    fenced_database_errors,
)

# What the processor, the wiring and the tests use: the store and the types of its methods.
__all__ = [
    "CommandStore",
    "ConcurrentWriteError",
    "ProcessedCommand",
    "UnstorableBatch",
    "WriteConflicts",
]


class CommandStore:
    """The per-checkpoint unit of work over the inbox and the payment method tables."""

    def __init__(
        self,
        engine: Engine,
        *,
        cached_keys: int = 50_000,
        max_cached_bytes: int = 96 * 2**20,
        recent_commands: int = 16,
        conflicts: WriteConflicts | None = None,
    ) -> None:
        if min(cached_keys, max_cached_bytes, recent_commands) < 1:
            raise ValueError("the cache bounds must be positive")
        self._engine = engine
        self._recent_commands = recent_commands
        self._conflicts = conflicts if conflicts is not None else WriteConflicts()
        self._cache = KeyStateCache(cached_keys, max_cached_bytes)
        self._reads = KeyStateReads(engine, self._cache, recent_commands)
        # This checkpoint's decisions, not yet in Postgres.
        self._staging = CheckpointStaging(self._reads.committed)

    @property
    def pending_commands(self) -> int:
        return len(self._staging.commands)

    @property
    def cached_keys(self) -> int:
        return len(self._cache)

    @property
    def cached_bytes(self) -> int:
        """The cache's estimated size; at most ``max_cached_bytes`` between calls."""
        return self._cache.size_bytes

    # --- reads -------------------------------------------------------------------------

    def processed_command(self, command_id: UUID, key: str) -> ProcessedCommand | None:
        """The stored outcome of ``command_id``, if it was processed before.

        Only a command id among the key's newest ones, or one that clashed before, costs
        a query; an id used earlier under another key, or long ago, is caught by the
        inbox's primary key when the checkpoint is written (see the module docstring).
        """
        pending = self._staging.commands.get(command_id)
        if pending is not None:
            return pending
        if command_id in self._reads.inbox_checked:
            return self._reads.inbox_checked.pop(command_id)
        known = self._reads.committed(key)
        if command_id.int not in known.recent_ids and command_id not in self._conflicts.command_ids:
            return None
        return self.stored_outcome(command_id)

    def stored_outcome(self, command_id: UUID) -> ProcessedCommand | None:
        """The stored outcome of ``command_id``, read from PostgreSQL now, whatever is
        cached or was read ahead: what another worker committed since is seen."""
        pending = self._staging.commands.get(command_id)
        if pending is not None:
            return pending
        with fenced_database_errors():
            return read_stored_outcome(self._reads.connection(), command_id)

    def key_state(
        self,
        key: str,
        named_payment_method_ids: Iterable[str] = (),
        named_payment_ids: Iterable[str] = (),
    ) -> KeyState:
        """The state of one key as the next decision must see it, this checkpoint's
        staged decisions included (``KeyStateReads.key_state`` says what it holds)."""
        return self._reads.key_state(
            self._staging, key, named_payment_method_ids, named_payment_ids
        )

    def forget_cached(self) -> None:
        """Drop every cached key (this worker gave up partitions; others may write them)."""
        self._cache.clear()
        self._reads.forget_read_ahead()

    def prefetch(
        self,
        keys: Iterable[str],
        command_ids: Iterable[UUID],
        payment_method_ids: Iterable[str] = (),
        payment_ids: Iterable[str] = (),
    ) -> None:
        """Read ahead what a batch's decisions need (``KeyStateReads.prefetch``), so that
        ``processed_command`` and ``key_state`` answer from it. What the batch itself
        changes is staged and wins over these rows; what another worker changes meanwhile
        fails the fenced write (module docstring)."""
        self._reads.prefetch(keys, command_ids, payment_method_ids, payment_ids)

    # --- writes ------------------------------------------------------------------------

    def record(self, processed: ProcessedCommand, key: str, decision: Decision) -> None:
        """Stage one decision; nothing reaches Postgres before ``flush``.

        A command of a checkpoint that PostgreSQL refused is written at once, alone,
        after the decisions staged before it: if PostgreSQL refuses it again, this raises
        ``InvalidMessage(processing_failed)`` and nothing of it is kept. Writing before
        the Kafka transaction commits is safe: a redelivery finds the stored outcome.
        """
        if processed.command_id not in self._conflicts.suspects:
            self._staging.stage(processed, key, decision)
            return
        self.flush()
        self._staging.stage(processed, key, decision)
        try:
            self._write_staged()
        finally:
            self._conflicts.suspects.discard(processed.command_id)

    def flush(self) -> int:
        """Write every staged decision in one transaction; returns the command count.

        The transaction fails, and nothing of it is applied, if another writer stored
        one of these commands or advanced one of these keys since this worker read it.
        """
        staged = list(self._staging.commands)
        try:
            return self._write_staged()
        except TransientError:
            raise
        except Exception as refused:
            # PostgreSQL refused a value (InvalidMessage, see state.errors) or the write
            # failed in a way that repeats: find the command at fault by writing each alone.
            self._conflicts.suspect(staged)
            detail = (
                refused.detail if isinstance(refused, InvalidMessage) else type(refused).__name__
            )
            raise UnstorableBatch(detail) from None

    def _write_staged(self) -> int:
        if not self._staging.commands:
            self.discard()
            return 0
        count = len(self._staging.commands)
        try:
            with fenced_database_errors(), self._engine.begin() as connection:
                write_checkpoint(
                    connection,
                    self._staging,
                    self._reads.read_versions,
                    self._reads.loaded_payments,
                    self._conflicts,
                )
        except ConcurrentWriteError:
            self.forget_cached()
            raise
        else:
            self._staging.commit_to_cache(self._cache, self._recent_commands)
        finally:
            self.discard()
        return count

    def discard(self) -> None:
        """Forget staged decisions (after a flush, or when the checkpoint is abandoned).

        The read connection goes back to the pool once per checkpoint, so a store that
        is dropped with its pipeline leaves no connection checked out for long.
        """
        self._reads.end_checkpoint()
        self._staging.clear()
