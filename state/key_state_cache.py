"""The key-state cache: each key's committed state and newest command ids, kept across
checkpoints, bounded by keys and by estimated bytes.

Memory is bounded by what is cached, not by how many commands or users go by. The cache
holds at most ``max_keys`` keys and at most ``max_bytes`` of their estimated size
(``estimated_bytes``), the least recently used evicted first. Per key it holds:

- the active payment methods only (at most ``MAX_ACTIVE_PAYMENT_METHODS``). A removed
  method is read when a command names its id (to remove it again, to reuse its id),
  together with the check whether the id is another user's: the same query. A command
  that names no payment method nor payment may be an erasure, which must purge what
  removed methods still hold; those are read for it only if the key has any
  (``CachedKey.removed_with_data``). A checkpoint's staged state keeps the methods it
  changed, removed ones too, until it is written: that is bounded by its commands.
- the ids of its newest ``recent_commands`` commands. They are what recognises a
  redelivered or re-sent command without a query; an older duplicate is still caught,
  by the inbox's primary key, when the checkpoint is written (see
  ``CommandStore.processed_command``).

The cache needs no word of rebalances: every write is fenced (``state.write_fences``).
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime

from domain.model import KeyState, PaymentMethod


@dataclass(frozen=True, slots=True)
class CachedKey:
    """A key as it is in Postgres: its state with its active methods only, the ids
    (``UUID.int``, oldest first) of its newest commands, whether a removed method of it
    may still hold a gateway token or a billing name, and the entry's estimated size."""

    state: KeyState
    recent_ids: tuple[int, ...]
    removed_with_data: bool
    size: int


def holds_personal_data(method: PaymentMethod) -> bool:
    return method.gateway_token is not None or method.billing_name is not None


def any_removed_with_data(methods: Iterable[PaymentMethod]) -> bool:
    return any(not method.active and holds_personal_data(method) for method in methods)


# What a cache entry costs beyond its strings, from the sizes of this interpreter's
# objects: the OrderedDict's slot and link, the entry, its state and tuples; per method
# its object, two datetimes and the expiry year (the month is a shared small int); per
# recent command id a tuple slot and a 128-bit int. Strings are measured one by one
# (``sys.getsizeof``: a non-ASCII billing name costs more). Every object is rounded up
# to pymalloc's 16-byte blocks, as the allocator does; the unit tests check the estimate
# against tracemalloc.
def _block(size: int) -> int:
    return -(-size // 16) * 16


_ENTRY_BYTES = (
    _block(sys.getsizeof(CachedKey(KeyState(key=""), (), False, 0)))
    + _block(sys.getsizeof(KeyState(key="")))
    + _block(sys.getsizeof((None,)))  # the methods tuple, beyond its slots
    + _block(sys.getsizeof((0,)))  # the recent ids tuple, beyond its slots
    + 120  # the OrderedDict: its hash table slots (with their slack) and its link node
)
_METHOD_BYTES = (
    8  # its slot in the methods tuple
    + _block(
        sys.getsizeof(
            PaymentMethod(
                "", "", None, "", "", 1, 2030, "", None, False, True, datetime.min, datetime.min
            )
        )
    )
    + 2 * _block(sys.getsizeof(datetime.min))
    + _block(sys.getsizeof(2030))
)
_RECENT_ID_BYTES = 8 + _block(sys.getsizeof(2**127))


def _str_bytes(value: str | None) -> int:
    return 0 if value is None else _block(sys.getsizeof(value))


def estimated_bytes(key: str, state: KeyState, recent_ids: tuple[int, ...]) -> int:
    """What a cache entry costs, to bound the cache by bytes and not only by keys.

    A key's size varies with its methods (up to ``MAX_ACTIVE_PAYMENT_METHODS``, with
    names and tokens) and its recent ids, from some 600 bytes to some 16 KiB, so a
    count of keys alone bounds nothing in particular.
    """
    size = _ENTRY_BYTES + _str_bytes(key) + _str_bytes(state.gateway_customer_id)
    size += _RECENT_ID_BYTES * len(recent_ids)
    for method in state.methods:
        size += (
            _METHOD_BYTES
            + _str_bytes(method.payment_method_id)
            + _str_bytes(method.user_id)
            + _str_bytes(method.gateway_token)
            + _str_bytes(method.brand)
            + _str_bytes(method.last4)
            + _str_bytes(method.fingerprint)
            + _str_bytes(method.billing_name)
        )
    return size


def cache_entry(
    key: str, state: KeyState, recent_ids: tuple[int, ...], removed_with_data: bool
) -> CachedKey:
    return CachedKey(state, recent_ids, removed_with_data, estimated_bytes(key, state, recent_ids))


class KeyStateCache:
    """Committed state per key, least recently used first, and its estimated size."""

    def __init__(self, max_keys: int, max_bytes: int) -> None:
        self._max_keys = max_keys
        self._max_bytes = max_bytes
        self._known: OrderedDict[str, CachedKey] = OrderedDict()
        self._known_bytes = 0

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, key: str) -> bool:
        return key in self._known

    @property
    def size_bytes(self) -> int:
        """The estimated size; at most ``max_bytes`` between calls."""
        return self._known_bytes

    def peek(self, key: str) -> CachedKey | None:
        """The entry of ``key``, if cached, left where it is in the eviction order."""
        return self._known.get(key)

    def use(self, key: str) -> CachedKey | None:
        """The entry of ``key``, if cached, now the most recently used."""
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
        return known

    def remember(self, key: str, known: CachedKey) -> None:
        before = self._known.pop(key, None)
        if before is not None:
            self._known_bytes -= before.size
        self._known[key] = known
        self._known_bytes += known.size
        while len(self._known) > self._max_keys or self._known_bytes > self._max_bytes:
            _, evicted = self._known.popitem(last=False)
            self._known_bytes -= evicted.size

    def no_removed_data(self, key: str) -> None:
        """No removed method of ``key`` holds personal data: stop looking for them."""
        known = self._known.get(key)
        if known is not None:
            self._known[key] = replace(known, removed_with_data=False)

    def clear(self) -> None:
        self._known.clear()
        self._known_bytes = 0
