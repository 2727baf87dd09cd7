"""Which offsets of a partition are done, and how that is committed with the offset.

Commands of a slow key are carried from one batch to the next while other keys' commands
after them in the same partition are published (docs/decisions/0009). The consumer
offset can only move to the oldest unfinished command, so the offsets above it that are
already published are committed with it, in the offset's metadata string, inside the same
Kafka transaction as their records (KIP-447). Whoever consumes the partition next reads
them back with ``Consumer.committed`` and skips those messages: nothing is published
twice and nothing is lost. Confluent's Parallel Consumer keeps its progress the same way.

The metadata is a bitmap of the offsets from the committed one up to the newest done one,
zlib-compressed, base64. The span is bounded by ``max_carried_offsets`` (the partition is
paused beyond it), which keeps the string under the broker's ``offset.metadata.max.bytes``
(4096 by default) for any pattern: 20,000 offsets are 2,500 bytes before compression.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterable

_PREFIX = "pw1:"


def encode_done(committed: int, done: Iterable[int]) -> str:
    """The metadata for ``done`` offsets above ``committed`` (others are left out)."""
    above = sorted(offset - committed for offset in done if offset > committed)
    if not above:
        return ""
    bitmap = bytearray(above[-1] // 8 + 1)
    for relative in above:
        bitmap[relative // 8] |= 1 << (relative % 8)
    return _PREFIX + base64.b64encode(zlib.compress(bytes(bitmap), 9)).decode("ascii")


def decode_done(committed: int, metadata: str | None) -> frozenset[int]:
    """The offsets that ``encode_done`` wrote; an empty or foreign string means none.

    A string this worker did not write (another tool committed with metadata) is not an
    error: it only means no offset above the committed one is known to be done.
    """
    if not metadata or not metadata.startswith(_PREFIX):
        return frozenset()
    try:
        bitmap = zlib.decompress(base64.b64decode(metadata[len(_PREFIX) :], validate=True))
    except (ValueError, zlib.error):
        return frozenset()
    return frozenset(
        committed + index * 8 + bit
        for index, byte in enumerate(bitmap)
        if byte
        for bit in range(8)
        if byte & (1 << bit)
    )


class PartitionProgress:
    """One assigned partition: what is committed, carried, and done in this batch.

    ``committed`` is the offset the group has (the next one to read after a rewind);
    ``published`` are done offsets above it whose records are in a committed Kafka
    transaction. Between commits, ``open`` holds consumed commands not finished yet
    (carried), and ``finished`` those whose records go into the next transaction.
    """

    def __init__(self, committed: int, published: frozenset[int] = frozenset()) -> None:
        self.committed = committed
        self.published: set[int] = set(published)
        self.open: set[int] = set()
        self.finished: set[int] = set()
        # The next offset the consumer will hand out (one past the newest consumed).
        self.position = committed

    def already_done(self, offset: int) -> bool:
        """True for a message whose records a committed transaction already holds."""
        return offset < self.committed or offset in self.published

    def consumed(self, offset: int) -> None:
        self.open.add(offset)
        self.position = max(self.position, offset + 1)

    def skipped(self, offset: int) -> None:
        self.position = max(self.position, offset + 1)

    def finish(self, offset: int) -> None:
        self.open.discard(offset)
        self.finished.add(offset)

    @property
    def carried_span(self) -> int:
        """Offsets between the oldest unfinished command and the newest consumed one."""
        return self.position - min(self.open) if self.open else 0

    def commit_point(self) -> tuple[int, str]:
        """The offset and metadata that the next transaction commits."""
        offset = min(self.open) if self.open else self.position
        done = [o for o in (*self.published, *self.finished) if o > offset]
        return offset, encode_done(offset, done)

    def news(self) -> tuple[int, str] | None:
        """``commit_point`` when a commit would move anything (records to publish, or the
        offset), else None."""
        point = self.commit_point()
        return point if self.finished or point[0] != self.committed else None

    def committed_now(self, offset: int) -> None:
        """The transaction that committed ``offset`` (its ``commit_point``) is done."""
        self.published = {o for o in (*self.published, *self.finished) if o > offset}
        self.committed = offset
        self.finished.clear()
