"""Engine creation and schema migrations."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from config.settings import Settings

_MIGRATIONS = Path(__file__).with_name("migrations")


def create_database_engine(settings: Settings) -> Engine:
    """An engine whose connections use the configured schema and statement timeout.

    Bound parameters (gateway tokens, billing names, emails) stay out of SQLAlchemy's
    exception messages and statement logs (``hide_parameters``). PostgreSQL's own error
    text can still quote a value (a unique key, a failing row): callers log the error's
    kind, not its message.
    """
    return create_engine(
        settings.sqlalchemy_url(),
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.database_connect_timeout_seconds,
            "options": (
                f"-c search_path={settings.database_schema}"
                f" -c statement_timeout={settings.database_statement_timeout_ms}"
            ),
            "application_name": "payment-worker",
        },
    )


def database_reachable(engine: Engine) -> bool:
    """Whether PostgreSQL answers a trivial query now (for readiness probes)."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError:
        return False
    return True


def _alembic_config(connection: Connection, schema: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["schema"] = schema
    return config


def upgrade_schema(engine: Engine, schema: str, revision: str = "head") -> None:
    """Create the schema if needed and apply every migration up to ``revision`` (all of
    them by default); safe to run repeatedly."""
    with engine.begin() as connection:
        # The schema name is validated by Settings (a plain identifier), so quoting it
        # into DDL is safe.
        connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    # Not inside a transaction of ours: Alembic opens one per migration, and a migration
    # that builds an index CONCURRENTLY runs outside any (autocommit_block).
    with engine.connect() as connection:
        command.upgrade(_alembic_config(connection, schema), revision)
        connection.commit()


def _scripts() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    """The newest migration this version of the worker ships."""
    head = _scripts().get_current_head()
    if head is None:
        raise RuntimeError("no migrations found")
    return head


def schema_is_current(revision: str | None) -> bool:
    """Whether a worker of this version may run on a schema at ``revision``.

    At this worker's head: yes. Older: no, it lacks tables this worker uses. Newer (a
    revision this worker does not know, from a later release being rolled out): yes,
    because migrations only ever add (expand first, remove in a later release).
    """
    if revision is None:
        return False
    if revision == head_revision():
        return True
    try:
        _scripts().get_revision(revision)
    except CommandError:  # unknown revision: a newer release migrated this schema
        return True
    return False


def current_revision(engine: Engine, schema: str) -> str | None:
    """The applied migration revision, or ``None`` before the first upgrade."""
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT to_regclass(:table) IS NOT NULL"),
            {"table": f'"{schema}".alembic_version'},
        ).scalar_one()
        if not exists:
            return None
        return connection.execute(
            text(f'SELECT version_num FROM "{schema}".alembic_version')  # noqa: S608
        ).scalar_one_or_none()
