"""Stream keys: whose sequence, state and gateway customer a command belongs to.

A user's commands and a guest payment's commands share one Kafka key space (a guest
command is keyed by its ``paymentId``), so a guest payment whose id equals a user id
would otherwise be decided on that user's stream: take its event sequence numbers and
its gateway customer. Stream keys therefore carry their kind (``user:<userId>``,
``guest-payment:<paymentId>``), in Postgres and in every cache, and the two can never
meet whatever the ids are.
"""

from __future__ import annotations

from typing import Final

from schemas.commands import Command, InitiatePayment

USER_STREAM: Final = "user:"
GUEST_PAYMENT_STREAM: Final = "guest-payment:"


def user_stream(user_id: str) -> str:
    return USER_STREAM + user_id


def guest_payment_stream(payment_id: str) -> str:
    return GUEST_PAYMENT_STREAM + payment_id


def stream_key(command: Command) -> str | None:
    """The stream a command is decided on; ``None`` for a guest command that has no
    guest meaning (only payments can be made without an account)."""
    if command.user_id is not None:
        return user_stream(command.user_id)
    if isinstance(command, InitiatePayment):
        return guest_payment_stream(command.payload.payment_id)
    return None


def event_stream_key(user_id: str | None, kafka_key: str) -> str:
    """The stream of a published event: a user's, or (no ``userId``) a guest payment's,
    whose Kafka key is its ``paymentId``. Sequences are gap-free per stream."""
    return user_stream(user_id) if user_id is not None else guest_payment_stream(kafka_key)


def stream_user_id(key: str) -> str | None:
    """The user a stream belongs to; ``None`` for a guest payment's stream."""
    return key.removeprefix(USER_STREAM) if key.startswith(USER_STREAM) else None
