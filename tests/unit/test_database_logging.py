"""Every engine the worker builds hides bound parameters, without a server.

The switch is the engine's: SQLAlchemy reads ``Engine.hide_parameters`` both when it
wraps a driver error (``[parameters: ...]`` in the message) and when it echoes a statement.
Building an engine opens no connection. The behaviour against PostgreSQL is
tests/integration/test_database_logging.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine

from config.settings import Settings
from state.database import create_database_engine
from state.projection_store import create_projection_engine


@pytest.mark.parametrize(
    "factory", [create_database_engine, create_projection_engine], ids=["worker", "projection"]
)
def test_the_engine_hides_bound_parameters(factory: Callable[[Settings], Engine]) -> None:
    engine = factory(Settings())
    try:
        assert engine.hide_parameters is True
    finally:
        engine.dispose()
