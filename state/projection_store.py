"""PostgreSQL of the User Service projection: its own schema, its own tables.

The view belongs to another service, so it shares nothing with the worker's tables
(no joins, no foreign keys) and lives in its own schema (``projection_schema``).

Migrations: the tables are created by ``metadata.create_all`` when the projection
starts (``ensure_projection_schema``), not by the worker's Alembic history. That is the
simplest option that stays correct here: the view is disposable (it is rebuilt from
``payment.events`` at any time, see docs/projection.md), so a change of its tables is shipped as a
rebuild into a new schema rather than as an in-place migration, and ``create_all`` with
``checkfirst`` is idempotent and safe when several projection instances start at once
(a concurrent creator's error is retried). A real User Service would put these tables
under its own migration tool.

Writes go out once per checkpoint, in one transaction, like ``state.command_store``.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
    create_engine,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, ProgrammingError

from config.settings import Settings
from domain.errors import TransientError
from domain.projection import Gap, MethodView, UserView
from state.errors import database_errors

metadata = MetaData()

# One row per (user, saved payment method): what "My payment methods" shows.
user_payment_methods = Table(
    "user_payment_methods",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("payment_method_id", Text, primary_key=True),
    Column("brand", Text, nullable=False),
    Column("last4", Text, nullable=False),
    Column("exp_month", SmallInteger, nullable=False),
    Column("exp_year", SmallInteger, nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The last applied event sequence per user: what makes the fold idempotent and ordered.
user_event_streams = Table(
    "user_event_streams",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("last_sequence", BigInteger, nullable=False),
)

# Users whose events have a gap; their view is held until it is rebuilt.
projection_gaps = Table(
    "projection_gaps",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("expected_sequence", BigInteger, nullable=False),
    Column("found_sequence", BigInteger, nullable=False),
    Column("event_id", Uuid, nullable=False),
    Column("source_partition", Integer, nullable=False),
    Column("source_offset", BigInteger, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)


def create_projection_engine(settings: Settings) -> Engine:
    """An engine whose connections use the projection's schema; parameters hidden in errors."""
    return create_engine(
        settings.sqlalchemy_url(),
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.database_connect_timeout_seconds,
            "options": (
                f"-c search_path={settings.projection_schema}"
                f" -c statement_timeout={settings.database_statement_timeout_ms}"
            ),
            "application_name": "payment-worker-projection",
        },
    )


def ensure_projection_schema(engine: Engine, schema: str) -> None:
    """Create the schema and the tables when missing; safe to run repeatedly and at once."""
    for attempt in range(3):
        try:
            with engine.begin() as connection:
                # The schema name is validated by Settings (a plain identifier).
                connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                metadata.create_all(connection, checkfirst=True)
            return
        except (IntegrityError, ProgrammingError):
            # Another instance created the same objects between the check and the create.
            if attempt == 2:
                raise


class ConcurrentViewWriteError(TransientError):
    """Another projection instance wrote one of these users first; the batch is retried."""


def _database_errors() -> AbstractContextManager[None]:
    return database_errors(ConcurrentViewWriteError)


@dataclass(frozen=True, slots=True)
class GapLocation:
    partition: int
    offset: int


class ProjectionStore:
    """The per-checkpoint unit of work over the view tables.

    Views are loaded once per checkpoint and kept in memory, so the next event of the
    same user sees the previous one. ``flush`` replaces the rows of every changed user
    in one transaction. The sequence row is updated only if it is still what was
    loaded: a projection instance that lost its partitions and flushes late fails
    instead of overwriting a newer view (its events are then skipped as duplicates).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._loaded: dict[str, UserView | None] = {}
        self._views: dict[str, UserView] = {}
        self._changed: set[str] = set()
        self._gap_locations: dict[str, GapLocation] = {}
        self._staged_events = 0

    def view(self, user_id: str) -> UserView:
        staged = self._views.get(user_id)
        if staged is not None:
            return staged
        with _database_errors(), self._engine.connect() as connection:
            loaded = load_view(connection, user_id)
        self._loaded[user_id] = loaded
        current = loaded or UserView(user_id=user_id)
        self._views[user_id] = current
        return current

    def stage(self, view: UserView, gap_at: GapLocation | None = None) -> None:
        """Stage a user's new view (and where its gap was found); written at ``flush``."""
        self._views[view.user_id] = view
        self._changed.add(view.user_id)
        if gap_at is not None:
            self._gap_locations[view.user_id] = gap_at

    def count_event(self) -> None:
        self._staged_events += 1

    def flush(self) -> int:
        """Write every changed view in one transaction; returns the events staged."""
        events = self._staged_events
        if not self._changed:
            self.discard()
            return events
        try:
            with _database_errors(), self._engine.begin() as connection:
                self._write(connection)
        finally:
            self.discard()
        return events

    def _write(self, connection: Connection) -> None:
        changed = sorted(self._changed)
        for user_id in changed:
            view, before = self._views[user_id], self._loaded.get(user_id)
            if before is None:
                connection.execute(
                    insert(user_event_streams).values(
                        user_id=user_id, last_sequence=view.last_sequence
                    )
                )
            else:
                written = connection.execute(
                    update(user_event_streams)
                    .where(
                        user_event_streams.c.user_id == user_id,
                        user_event_streams.c.last_sequence == before.last_sequence,
                    )
                    .values(last_sequence=view.last_sequence)
                )
                if written.rowcount != 1:
                    raise ConcurrentViewWriteError("a view changed meanwhile")
        connection.execute(
            delete(user_payment_methods).where(user_payment_methods.c.user_id.in_(changed))
        )
        rows = [
            {"user_id": user_id, **_method_row(method)}
            for user_id in changed
            for method in self._views[user_id].methods
        ]
        if rows:
            connection.execute(insert(user_payment_methods), rows)
        now = datetime.now(UTC)
        for user_id in changed:
            gap, before = self._views[user_id].gap, self._loaded.get(user_id)
            if gap is None or (before is not None and before.gap is not None):
                continue
            location = self._gap_locations.get(user_id, GapLocation(-1, -1))
            connection.execute(
                insert(projection_gaps).values(
                    user_id=user_id,
                    expected_sequence=gap.expected_sequence,
                    found_sequence=gap.found_sequence,
                    event_id=gap.event_id,
                    source_partition=location.partition,
                    source_offset=location.offset,
                    detected_at=now,
                )
            )

    def discard(self) -> None:
        self._loaded.clear()
        self._views.clear()
        self._changed.clear()
        self._gap_locations.clear()
        self._staged_events = 0


def _method_row(method: MethodView) -> dict[str, Any]:
    return {
        "payment_method_id": method.payment_method_id,
        "brand": method.brand,
        "last4": method.last4,
        "exp_month": method.exp_month,
        "exp_year": method.exp_year,
        "is_default": method.is_default,
        "updated_at": method.updated_at,
    }


def load_view(connection: Connection, user_id: str) -> UserView | None:
    """A user's stored view, or ``None`` when no event of the user was read yet."""
    last_sequence = connection.execute(
        select(user_event_streams.c.last_sequence).where(user_event_streams.c.user_id == user_id)
    ).scalar_one_or_none()
    if last_sequence is None:
        return None
    rows = connection.execute(
        select(user_payment_methods)
        .where(user_payment_methods.c.user_id == user_id)
        .order_by(user_payment_methods.c.payment_method_id)
    ).all()
    gap_row = connection.execute(
        select(projection_gaps).where(projection_gaps.c.user_id == user_id)
    ).one_or_none()
    gap = (
        Gap(gap_row.expected_sequence, gap_row.found_sequence, gap_row.event_id)
        if gap_row is not None
        else None
    )
    methods = tuple(
        MethodView(
            payment_method_id=row.payment_method_id,
            brand=row.brand,
            last4=row.last4,
            exp_month=row.exp_month,
            exp_year=row.exp_year,
            is_default=row.is_default,
            updated_at=row.updated_at,
        )
        for row in rows
    )
    return UserView(user_id=user_id, last_sequence=last_sequence, methods=methods, gap=gap)


def read_view(engine: Engine, user_id: str) -> UserView | None:
    """For ``payment-worker view``: one user's view as stored."""
    with _database_errors(), engine.connect() as connection:
        tables = connection.execute(text("SELECT to_regclass('user_event_streams')")).scalar()
        # None: the projection never ran on this schema.
        return None if tables is None else load_view(connection, user_id)
