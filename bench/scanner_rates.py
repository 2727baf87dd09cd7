"""``python -m bench.scanner_rates``: recall, false-positive rates and cost of the card scanner.

The unit tests (``tests/unit/test_card_numbers.py``) run the same measurements at a size
that suits CI; this command runs them as long as asked, for a soak or after a change of
the rules in ``schemas/card_numbers.py``. It needs nothing but the repository.

The values it measures on are the tests' own (``tests.support.card_number_disguises``:
every published test card number in every written form, which must always be found;
``tests.support.card_number_lookalikes``: random tokens and ids, which must never be), so
both measure the same thing; the import runs one way: tests never import ``bench``.
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit

from schemas.card_numbers import find_sensitive_data
from tests.support.card_number_disguises import (
    measure_recall,
    typical_add_payment_method,
    typical_initiate_payment,
)
from tests.support.card_number_lookalikes import (
    NUMERIC_KINDS,
    RANDOM_KINDS,
    false_positives,
    numeric_false_positives,
)

# --- cost ------------------------------------------------------------------------------------


def scan_microseconds(document: object, number: int = 20_000, repeat: int = 5) -> float:
    """The best per-call time of ``find_sensitive_data(document)`` over ``repeat`` runs."""
    runs = timeit.repeat(lambda: find_sensitive_data(document), number=number, repeat=repeat)
    return min(runs) / number * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        "python -m bench.scanner_rates", description="Measure the card-number scanner."
    )
    parser.add_argument("--count", type=int, default=10_000_000, help="values of each kind")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    total, missed = measure_recall()
    print(f"recall: {total - len(missed)}/{total} = {(total - len(missed)) / total:.4%}")
    for description in missed[:20]:
        print(f"  missed: {description}")

    for name, kind in {**RANDOM_KINDS, **NUMERIC_KINDS}.items():
        started = time.perf_counter()
        if name in NUMERIC_KINDS:
            found = numeric_false_positives(kind, args.count, args.seed)
        else:
            found = false_positives(kind, args.count, args.seed)
        seconds = time.perf_counter() - started
        per_million = len(found) / args.count * 1e6
        print(
            f"false positives, {name}: {len(found)} of {args.count:,}"
            f" = {per_million:.2f} per million ({seconds:.0f} s)"
        )
        for value in found[:5]:
            print(f"  {value}")

    print(
        "find_sensitive_data per command:"
        f" AddPaymentMethod {scan_microseconds(typical_add_payment_method()):.2f} µs,"
        f" InitiatePayment {scan_microseconds(typical_initiate_payment()):.2f} µs"
    )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
