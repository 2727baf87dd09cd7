"""The root of the worker's errors, and the wire's own: a message that is not a command.

The root lives here, in the lowest layer (``schemas`` imports nothing of the project), so
that every layer's errors can be under it; ``domain.errors`` names the three kinds.
"""

from __future__ import annotations

from enum import StrEnum


class PaymentWorkerError(Exception):
    """Root of every error the worker raises on purpose."""


class InvalidReason(StrEnum):
    """Why a message was dead-lettered; a fixed set, used as a metric label."""

    EMPTY_VALUE = "empty_value"
    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid_utf8"
    NOT_JSON = "not_json"
    NOT_AN_OBJECT = "not_an_object"
    TOO_DEEP = "too_deep"
    NUMBER_OUT_OF_RANGE = "number_out_of_range"
    NON_FINITE_NUMBER = "non_finite_number"
    DUPLICATE_KEY = "duplicate_key"
    UNKNOWN_COMMAND_TYPE = "unknown_command_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    SCHEMA_VIOLATION = "schema_violation"
    SENSITIVE_DATA = "sensitive_data"
    KEY_MISMATCH = "key_mismatch"
    # The Kafka key is not valid UTF-8, not an id, or longer than 128 bytes.
    INVALID_KEY = "invalid_key"
    # issuedAt lies further in the future than the worker's clock skew allows.
    ISSUED_IN_FUTURE = "issued_in_future"
    # A valid command that could not be processed for a reason that retrying cannot
    # change (a value PostgreSQL refuses, an unexpected error in a rule).
    PROCESSING_FAILED = "processing_failed"


class InvalidMessage(PaymentWorkerError):
    """The message is not a valid command; carries a fixed reason and a safe detail."""

    def __init__(
        self,
        reason: InvalidReason,
        detail: str,
        *,
        command_id: str | None = None,
        command_type: str | None = None,
        withhold_body: bool = False,
        withhold_key: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.command_id = command_id
        self.command_type = command_type
        # True when the body may hold card data: the DLQ then keeps only its hash.
        self.withhold_body = withhold_body
        # True when the Kafka key itself may hold card data: it is not republished.
        self.withhold_key = withhold_key
