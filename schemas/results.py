"""One result per command on ``payment.command-results``, so producers learn the outcome."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from uuid import UUID

from schemas.base import Identifier, WireModel

ResultStatus = Literal["accepted", "rejected", "invalid"]


class Reason(StrEnum):
    """Fixed reason codes: producers branch on them, so they never change meaning."""

    OK = "ok"
    NO_CHANGE = "no_change"
    GUEST_CANNOT_SAVE_PAYMENT_METHOD = "guest_cannot_save_payment_method"
    CARD_EXPIRED = "card_expired"
    DUPLICATE_PAYMENT_METHOD = "duplicate_payment_method"
    TOO_MANY_PAYMENT_METHODS = "too_many_payment_methods"
    PAYMENT_METHOD_ID_TAKEN = "payment_method_id_taken"
    PAYMENT_METHOD_NOT_FOUND = "payment_method_not_found"
    COMMAND_ID_CONFLICT = "command_id_conflict"
    GUEST_NOT_ALLOWED = "guest_not_allowed"
    GUEST_CANNOT_USE_SAVED_METHOD = "guest_cannot_use_saved_method"
    PAYMENT_ID_TAKEN = "payment_id_taken"
    PAYMENT_NOT_FOUND = "payment_not_found"
    PAYMENT_NOT_A_GUEST_PAYMENT = "payment_not_a_guest_payment"
    USER_NOT_FOUND = "user_not_found"
    # The User Service's answer for this user can never be a profile (a final 4xx, a
    # malformed profile): send the command again with its ``customer``, or fix the profile.
    USER_PROFILE_UNUSABLE = "user_profile_unusable"
    GATEWAY_REFUSED = "gateway_refused"
    # The gateway answered outside its contract (no customer id, a status it may not send).
    GATEWAY_UNEXPECTED_ANSWER = "gateway_unexpected_answer"


class CommandResult(WireModel):
    command_id: UUID | None
    correlation_id: Identifier | None = None
    type: str | None
    status: ResultStatus
    reason: str
    event_ids: list[UUID]
    payment_method_id: Identifier | None = None
    payment_id: Identifier | None = None
