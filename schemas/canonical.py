"""The canonical hash of a command: what a duplicate must match to be "the same command"."""

from __future__ import annotations

import hashlib
import json

from schemas.commands import Command


def canonical_sha256(command: Command) -> bytes:
    """Hash of the command's meaning, not its bytes: key order and spacing don't count."""
    canonical = json.dumps(command.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).digest()
