"""The key-state cache's size estimate is honest: it is what bounds the worker's memory.

``state.key_state_cache`` evicts keys when their estimated bytes pass
``state_cache_max_bytes``; an estimate far below what the entries really take would let
memory grow past the bound. Entries are built as a read from PostgreSQL builds them
(every string its own object), and their estimate is compared with what tracemalloc
sees them allocate.
"""

from __future__ import annotations

import gc
import tracemalloc
import uuid
from collections import OrderedDict
from datetime import timedelta

import pytest

from domain.model import KeyState, PaymentMethod
from state.key_state_cache import CachedKey, estimated_bytes
from tests.factories import ISSUED_AT

ENTRIES = 2_000


def _fresh(text: str) -> str:
    """A new string object, as a database row gives (not an interned constant)."""
    return "".join(list(text))


def _entry(index: int, methods: int, recent_ids: int, name: str) -> tuple[str, CachedKey]:
    user = _fresh(f"user-mem-{index:06d}")
    key = _fresh(f"user:{user}")
    cards = tuple(
        PaymentMethod(
            payment_method_id=_fresh(f"pm-{user}-{n}"),
            user_id=_fresh(user),
            gateway_token=_fresh(f"tok_fp_{user}_{n}"),
            brand=_fresh("visa"),
            last4=_fresh(f"{n:04d}"),
            exp_month=int(_fresh("7")),
            exp_year=int(_fresh("2031")),
            fingerprint=_fresh(f"fp_{user}_{n}"),
            billing_name=_fresh(f"{name} {user}") if n % 2 else None,
            is_default=n == 0,
            active=True,
            created_at=ISSUED_AT + timedelta(microseconds=index * 31 + n),
            updated_at=ISSUED_AT + timedelta(microseconds=index * 37 + n),
        )
        for n in range(methods)
    )
    state = KeyState(
        key=key,
        last_sequence=int(_fresh("12345")),
        methods=cards,
        gateway_customer_id=_fresh(f"cus_{index:024d}"),
    )
    ids = tuple(uuid.uuid4().int for _ in range(recent_ids))
    return key, CachedKey(state, ids, False, estimated_bytes(key, state, ids))


@pytest.mark.parametrize(
    ("methods", "recent_ids", "name"),
    [
        (0, 1, "Holder"),  # a guest payment: a sequence and one command
        (1, 1, "Holder"),
        (3, 5, "Holder"),
        (6, 16, "Holder"),
        (20, 16, "Holder"),  # the most a user can have
        (6, 16, "Jürgen Groß-Müller"),  # a non-ASCII billing name takes more per character
    ],
)
def test_the_estimate_is_what_entries_allocate_or_a_little_more(
    methods: int, recent_ids: int, name: str
) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache: OrderedDict[str, CachedKey] = OrderedDict()
        for index in range(ENTRIES):
            key, entry = _entry(index, methods, recent_ids, name)
            cache[key] = entry
        allocated = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = sum(entry.size for entry in cache.values())
    # tracemalloc counts requested bytes; the estimate rounds each object up to the
    # allocator's 16-byte blocks, so it may be a little above, never far below.
    assert 0.95 * allocated <= estimated <= 1.3 * allocated, (estimated, allocated)


def test_an_entry_grows_with_its_methods_and_ids_only() -> None:
    _, small = _entry(1, methods=1, recent_ids=1, name="Holder")
    _, more_ids = _entry(1, methods=1, recent_ids=16, name="Holder")
    _, more_cards = _entry(1, methods=20, recent_ids=1, name="Holder")
    assert small.size < more_ids.size < more_cards.size
    # The bounds the settings document: well under 1 KiB per recent id, about 16 KiB at most.
    assert more_ids.size - small.size < 15 * 100
    assert more_cards.size < 16 * 1024
