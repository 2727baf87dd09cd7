"""Bound parameters stay out of a failing statement's error text and log lines.

SQLAlchemy appends ``[parameters: {...}]`` to the message of every error a statement
raises and logs the parameters of every statement it echoes, unless the engine hides
them. Those values are gateway tokens, billing names and emails. Each failure below
carries a distinctive secret only as a bound parameter, fails on the real PostgreSQL of
the stack (or in psycopg, on its way there), and the secret must appear nowhere: not in
the error, not in its traceback, not in a log line. The failures are ones whose server
message does not quote the value itself; PostgreSQL's own text can (a duplicate key, a
failing row), which ``hide_parameters`` cannot change.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from config.settings import Settings
from state.database import create_database_engine
from state.projection_store import create_projection_engine

pytestmark = pytest.mark.integration

SECRET = "tok_live_9f3cSECRETa27d"
HIDDEN = "[SQL parameters hidden due to hide_parameters=True]"

EngineFactory = Callable[[Settings], Engine]


def _nul_byte_in_text(connection: Connection) -> None:
    # Refused by psycopg before it reaches the server: PostgreSQL text holds no NUL.
    connection.execute(
        text("INSERT INTO leak_probe (id, token) VALUES (2, :token)"), {"token": f"{SECRET}\x00"}
    )


def _duplicate_key_beside_the_secret(connection: Connection) -> None:
    # The server's DETAIL names the duplicate key (id 1), not the token beside it.
    connection.execute(
        text("INSERT INTO leak_probe (id, token) VALUES (:id, :token)"), {"id": 1, "token": SECRET}
    )


def _division_by_zero_after_binding(connection: Connection) -> None:
    connection.execute(text("SELECT length(CAST(:token AS text)) / 0"), {"token": SECRET})


FAILURES: dict[str, Callable[[Connection], None]] = {
    "nul-byte": _nul_byte_in_text,
    "unique-violation": _duplicate_key_beside_the_secret,
    "division-by-zero": _division_by_zero_after_binding,
}


def _fail(engine: Engine, failure: Callable[[Connection], None]) -> DBAPIError:
    """Run ``failure`` on a fresh connection with a probe table; the error it raised."""
    with engine.connect() as connection:
        connection.execute(
            text("CREATE TEMPORARY TABLE leak_probe (id int PRIMARY KEY, token text)")
        )
        connection.execute(text("INSERT INTO leak_probe (id, token) VALUES (1, 'stored')"))
        with pytest.raises(DBAPIError) as raised:
            failure(connection)
        connection.rollback()
    return raised.value


@pytest.fixture(
    params=[create_database_engine, create_projection_engine], ids=["worker", "projection"]
)
def factory(request: pytest.FixtureRequest) -> EngineFactory:
    engine_factory: EngineFactory = request.param
    return engine_factory


@pytest.fixture
def echoing(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record, and SQLAlchemy echoing each statement with its parameters.

    Set before an engine connects: a connection reads the logger's level when it opens.
    """
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")
    return caplog


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_a_failing_statement_shows_no_parameter_value(
    stack_settings: Settings,
    factory: EngineFactory,
    failure: Callable[[Connection], None],
    echoing: pytest.LogCaptureFixture,
) -> None:
    engine = factory(stack_settings)
    try:
        error = _fail(engine, failure)
    finally:
        engine.dispose()
    # What the worker's log handler prints for an unexpected error: message and traceback.
    logging.getLogger("payment_worker").error("statement failed", exc_info=error)

    assert HIDDEN in str(error)
    assert SECRET not in str(error)
    assert SECRET not in "".join(traceback.format_exception(error))
    statements = [
        record.getMessage() for record in echoing.records if record.name.startswith("sqlalchemy")
    ]
    assert any("leak_probe" in line or "length(" in line for line in statements), (
        "SQLAlchemy echoed no statement: the log check would prove nothing"
    )
    assert any(HIDDEN in line for line in statements)
    assert SECRET not in echoing.text
    for record in echoing.records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.args)


@pytest.mark.parametrize("failure", FAILURES.values(), ids=FAILURES.keys())
def test_without_hidden_parameters_the_same_failure_shows_the_secret(
    stack_settings: Settings, failure: Callable[[Connection], None]
) -> None:
    """The control: each failure above does carry the secret into SQLAlchemy's message."""
    engine = create_engine(stack_settings.sqlalchemy_url(), connect_args={"connect_timeout": 10})
    try:
        error = _fail(engine, failure)
    finally:
        engine.dispose()
    assert HIDDEN not in str(error)
    assert SECRET in str(error)
