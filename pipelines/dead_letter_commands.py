"""``payment-worker dlq list|replay``: the operator's commands over the dead-letter topic.

The arguments (``--reason``, ``--partition``, ``--from-offset``, ``--to-offset``) select
the dead letters; ``pipelines.dead_letter_tools`` reads and replays them, and this module
prints the outcome: one JSON line per dead letter (never its body), or the replay's counts.
"""

from __future__ import annotations

import argparse
import json

from config.settings import Settings
from pipelines.dead_letter_tools import DeadLetterFilter, describe, read_dead_letters, replay


def _dead_letter_filter(args: argparse.Namespace) -> DeadLetterFilter:
    """The dead letters the arguments select (every one when none is given)."""
    return DeadLetterFilter(
        reason=args.reason,
        partition=args.partition,
        from_offset=args.from_offset,
        to_offset=args.to_offset,
    )


def dlq_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print each selected dead letter: where it came from and why, never its body."""
    for message in read_dead_letters(settings, _dead_letter_filter(args)):
        print(json.dumps(describe(message)), flush=True)
    return 0


def dlq_replay(settings: Settings, args: argparse.Namespace) -> int:
    """Produce the selected dead letters back to the command topic (with ``--dry-run``
    only count them); print the counts."""
    counts = replay(settings, _dead_letter_filter(args), dry_run=args.dry_run)
    print(json.dumps({**counts, "dryRun": args.dry_run}))
    return 0
