"""The set-up commands an operator or a deployment runs once: migrate the database schema
(``db upgrade``, ``db current``), create the topics (``topics create``), and write the
message contracts (``schemas generate``). Each does its work through the module that owns
it and prints what it did.
"""

from __future__ import annotations

import argparse

from config.settings import Settings
from pipelines.topics import create_topics
from schemas.contracts import write_contracts
from state.database import create_database_engine, current_revision, upgrade_schema


def db_upgrade(settings: Settings, _: argparse.Namespace) -> int:
    """Apply every migration to ``database_schema``; print the revision it is at."""
    engine = create_database_engine(settings)
    upgrade_schema(engine, settings.database_schema)
    print(
        f"database schema {settings.database_schema!r} at revision "
        f"{current_revision(engine, settings.database_schema)}"
    )
    return 0


def db_current(settings: Settings, _: argparse.Namespace) -> int:
    """Print the applied revision; exit status 1 if the schema was never migrated."""
    revision = current_revision(create_database_engine(settings), settings.database_schema)
    print(revision or "not migrated")
    return 0 if revision else 1


def topics_create(settings: Settings, _: argparse.Namespace) -> int:
    """Create those of the five topics that are missing; print ``created`` or ``exists``
    for each."""
    for name, outcome in create_topics(settings).items():
        print(f"{name}: {outcome}")
    return 0


def schemas_generate(_: Settings, __: argparse.Namespace) -> int:
    """Write the JSON Schemas and the AsyncAPI document under ``schemas/``."""
    for path in write_contracts():
        print(f"wrote {path}")
    return 0
