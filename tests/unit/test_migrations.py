from __future__ import annotations

from state.database import head_revision, schema_is_current


def test_a_worker_runs_on_its_own_or_a_newer_schema_only() -> None:
    assert schema_is_current(head_revision())
    assert schema_is_current("a-revision-from-a-later-release")
    assert not schema_is_current("0001")
    assert not schema_is_current(None)
