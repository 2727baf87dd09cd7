"""Committed offsets with the done offsets above them (docs/decisions/0009)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pipelines.offset_progress import PartitionProgress, decode_done, encode_done

# The broker's default offset.metadata.max.bytes.
BROKER_METADATA_LIMIT = 4096


@given(
    committed=st.integers(min_value=0, max_value=2**40),
    relative=st.sets(st.integers(min_value=1, max_value=20_000), max_size=300),
)
def test_done_offsets_round_trip(committed: int, relative: set[int]) -> None:
    done = {committed + r for r in relative}
    assert decode_done(committed, encode_done(committed, done)) == done


def test_any_pattern_within_the_carried_bound_fits_the_broker_limit() -> None:
    rng = random.Random(7)  # noqa: S311 - test data
    done = {offset for offset in range(1, 20_000) if rng.random() < 0.5}
    assert len(encode_done(0, done)) < BROKER_METADATA_LIMIT


def test_metadata_this_worker_did_not_write_means_nothing_is_done() -> None:
    assert decode_done(10, None) == frozenset()
    assert decode_done(10, "") == frozenset()
    assert decode_done(10, "written by another tool") == frozenset()
    assert decode_done(10, "pw1:not base64!") == frozenset()


def test_a_carried_command_holds_the_offset_and_later_ones_are_committed_as_done() -> None:
    progress = PartitionProgress(100)
    for offset in range(100, 105):
        progress.consumed(offset)
    for offset in (100, 102, 103, 104):
        progress.finish(offset)

    offset, metadata = progress.commit_point()
    assert offset == 101
    assert decode_done(101, metadata) == {102, 103, 104}

    progress.committed_now(offset)
    # Redelivered from 101 after a crash: only 101 is processed again.
    after_crash = PartitionProgress(offset, decode_done(offset, metadata))
    assert [o for o in range(101, 105) if not after_crash.already_done(o)] == [101]


def test_once_the_carried_command_finishes_the_offset_moves_past_everything() -> None:
    progress = PartitionProgress(100)
    for offset in range(100, 103):
        progress.consumed(offset)
    progress.finish(100)
    progress.finish(102)
    progress.committed_now(progress.commit_point()[0])
    assert progress.news() is None

    progress.finish(101)
    assert progress.news() == (103, "")
    progress.committed_now(103)
    assert progress.published == set()
    assert progress.carried_span == 0


def test_gaps_of_transaction_markers_do_not_hold_the_offset() -> None:
    progress = PartitionProgress(0)
    progress.consumed(0)
    progress.consumed(2)  # offset 1 is a control record the consumer never returns
    progress.finish(0)
    progress.finish(2)
    assert progress.commit_point() == (3, "")
