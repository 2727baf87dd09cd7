"""Detection of card numbers and CVVs anywhere in a command: see ``schemas.card_numbers``.

The scanner moved to ``schemas.card_numbers`` (its rules and measured rates are documented
there); this module keeps the older import path working.
"""

from __future__ import annotations

from schemas.card_numbers import (
    bytes_may_hold_card_number,
    contains_card_number,
    find_sensitive_data,
    passes_luhn,
    sensitive_field_name,
)

__all__ = [
    "bytes_may_hold_card_number",
    "contains_card_number",
    "find_sensitive_data",
    "passes_luhn",
    "sensitive_field_name",
]
