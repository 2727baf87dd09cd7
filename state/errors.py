"""How database failures reach the pipeline: as transient errors, counted by kind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from domain.errors import TransientError
from pipelines.metrics import POSTGRES_ERRORS


@contextmanager
def database_errors(on_conflict: type[TransientError]) -> Iterator[None]:
    """Map database failures to transient errors: the pipeline waits and retries the batch.

    An integrity error means a row this batch creates exists already (another writer
    stored it first), raised as ``on_conflict``; a lost or refused connection means
    the database is unavailable.
    """
    try:
        yield
    except IntegrityError:
        POSTGRES_ERRORS.labels("conflict").inc()
        raise on_conflict("another writer stored part of this batch first") from None
    except (OperationalError, InterfaceError) as error:
        POSTGRES_ERRORS.labels("unavailable").inc()
        raise TransientError(f"database unavailable ({type(error.orig).__name__})") from None
