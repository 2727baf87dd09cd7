"""Options of the whole suite: here, so pytest knows them whatever paths it is given."""

from __future__ import annotations

import pytest

from tests.support.containers import SERVICES_VARIABLE


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--services",
        choices=["stack", "containers"],
        default=None,
        help="Kafka and PostgreSQL of the integration tests: the running stack, or "
        f"containers of the session's own (default: ${SERVICES_VARIABLE}, else stack)",
    )
