"""``payment-worker view USER_ID``: a user's payment method view, as the projection keeps it.

Printed as the JSON document the User Service would read, with ``held`` (and ``gap``) when
the projection holds the user's view back on a missing event; exit status 1 when the
projection has no view of the user.
"""

from __future__ import annotations

import argparse
import json

from config.settings import Settings
from state.projection_store import create_projection_engine, read_view


def print_view(settings: Settings, args: argparse.Namespace) -> int:
    """Print the view of ``args.user_id``; exit status 0, or 1 if there is none."""
    engine = create_projection_engine(settings)
    try:
        view = read_view(engine, args.user_id)
    finally:
        engine.dispose()
    if view is None:
        print(json.dumps({"userId": args.user_id, "found": False}))
        return 1
    document = {
        "userId": view.user_id,
        "lastSequence": view.last_sequence,
        "held": view.gap is not None,
        "paymentMethods": [
            {
                "paymentMethodId": m.payment_method_id,
                "brand": m.brand,
                "last4": m.last4,
                "expMonth": m.exp_month,
                "expYear": m.exp_year,
                "isDefault": m.is_default,
                "updatedAt": m.updated_at.isoformat(),
            }
            for m in view.methods
        ],
    }
    if view.gap is not None:
        document["gap"] = {
            "expectedSequence": view.gap.expected_sequence,
            "foundSequence": view.gap.found_sequence,
        }
    print(json.dumps(document, indent=2))
    return 0
