"""How database failures reach the pipeline, decided by error class, never by message text.

- **conflict** (SQLSTATE 23505 unique or 23P01 exclusion violation): another writer
  stored a row of this batch first. Transient: the batch is retried on fresh state.
- **unstorable** (SQLSTATE class 22 data exception; the rest of class 23: not null,
  check, foreign key; class 54 program limit exceeded, such as an index row too large;
  psycopg's client-side ``DataError``, such as a NUL byte in text): the value cannot be
  stored whatever happens. ``InvalidMessage(processing_failed)``: the command goes to the
  dead-letter topic and the worker goes on.
- **unavailable** (everything else: class 08 connection, 40 serialization failure or
  deadlock, 53 resources, 55 lock not available, 57 admin shutdown or statement timeout,
  58, XX; 28, 42 and 3D too, credentials, privileges or a missing table being a
  deployment to fix and not a message to drop; no SQLSTATE at all, a lost or refused
  connection; a pool timeout). Transient: wait and retry, never dead-letter.

Anything unknown is transient on purpose: a valid command must never be dead-lettered
because the database was having a bad moment.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from domain.errors import TransientError
from schemas.errors import InvalidMessage, InvalidReason
from telemetry.metrics import POSTGRES_ERRORS

CONFLICT_STATES = frozenset({"23505", "23P01"})
UNSTORABLE_CLASSES = frozenset({"22", "23", "54"})


def sqlstate(error: DBAPIError) -> str | None:
    """The SQLSTATE the server sent, or ``None`` for a failure on the client side."""
    code = getattr(error.orig, "sqlstate", None)
    return code if isinstance(code, str) else None


def error_kind(error: DBAPIError) -> str:
    """``conflict``, ``unstorable`` or ``unavailable``: see the module's table."""
    code = sqlstate(error)
    if code is None:
        return "unstorable" if isinstance(error, DataError) else "unavailable"
    if code in CONFLICT_STATES:
        return "conflict"
    if code[:2] in UNSTORABLE_CLASSES or isinstance(error, IntegrityError):
        return "unstorable"
    return "unavailable"


@contextmanager
def database_errors(on_conflict: type[TransientError]) -> Iterator[None]:
    """Map database failures to the worker's error kinds (see the module's table)."""
    try:
        yield
    except DBAPIError as error:
        kind = error_kind(error)
        POSTGRES_ERRORS.labels(kind).inc()
        code = sqlstate(error) or type(error.orig).__name__
        if kind == "conflict":
            raise on_conflict("another writer stored part of this batch first") from None
        if kind == "unstorable":
            raise InvalidMessage(
                InvalidReason.PROCESSING_FAILED,
                f"PostgreSQL cannot store a value of this command ({code})",
            ) from None
        raise TransientError(f"database unavailable ({code})") from None
    except UnicodeEncodeError:
        # psycopg cannot even encode the value (a lone surrogate): the same as a refusal.
        POSTGRES_ERRORS.labels("unstorable").inc()
        raise InvalidMessage(
            InvalidReason.PROCESSING_FAILED, "a value of this command cannot be encoded"
        ) from None
    except PoolTimeout:
        POSTGRES_ERRORS.labels("unavailable").inc()
        raise TransientError("database unavailable (no pooled connection in time)") from None
