"""Stream keys carry their kind: ``user:<userId>`` or ``guest-payment:<paymentId>``.

Before this revision a stream key was the bare Kafka key, so a guest payment whose id
equalled a user id shared that user's sequence, state and gateway customer. Existing
keys are classified once: a key is a guest payment's when a payment has that id and
nothing of a user (a saved method, a gateway customer, a payment, a command other than
InitiatePayment) is known under it; every other key is a user's. A key on which both
already met stays the user's: its sequence was shared before, and that user's view is
rebuilt by the projection (docs/decisions/0007-stream-key-namespaces.md).

``event_streams`` becomes ``stream_sequences``. The name says what it holds now, and the
rename is a fence: a worker of an earlier release, which would read and write bare keys
(starting a migrated user's sequence again at 1), fails on its first read instead, so
roll this release out by migrating first; earlier workers stop until they are replaced.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_CLASSIFY = """
CREATE TEMPORARY TABLE stream_kinds ON COMMIT DROP AS
SELECT k.key,
       CASE WHEN EXISTS (SELECT 1 FROM payments AS p WHERE p.payment_id = k.key)
             AND NOT EXISTS (SELECT 1 FROM payment_methods AS m WHERE m.user_id = k.key)
             AND NOT EXISTS (SELECT 1 FROM gateway_customers AS c WHERE c.user_id = k.key)
             AND NOT EXISTS (SELECT 1 FROM payments AS p WHERE p.user_id = k.key)
             AND NOT EXISTS (
                 SELECT 1 FROM processed_commands AS i
                 WHERE i.stream_key = k.key AND i.command_type <> 'InitiatePayment')
            THEN 'guest-payment:' ELSE 'user:' END AS prefix
FROM (SELECT stream_key AS key FROM event_streams
      UNION SELECT stream_key FROM processed_commands) AS k
"""


def upgrade() -> None:
    op.execute(_CLASSIFY)
    op.execute(
        "UPDATE event_streams AS e SET stream_key = s.prefix || e.stream_key"
        " FROM stream_kinds AS s WHERE s.key = e.stream_key"
    )
    op.execute(
        "UPDATE processed_commands AS i SET stream_key = s.prefix || i.stream_key"
        " FROM stream_kinds AS s WHERE s.key = i.stream_key"
    )
    op.rename_table("event_streams", "stream_sequences")


def downgrade() -> None:
    op.rename_table("stream_sequences", "event_streams")
    for table in ("event_streams", "processed_commands"):
        op.execute(
            f"UPDATE {table} SET stream_key ="  # noqa: S608 - fixed table names
            " regexp_replace(stream_key, '^(user|guest-payment):', '')"
        )
