"""YAML as compose reads it: compose's own tags, beside the safe subset."""

from __future__ import annotations

import yaml


class ComposeLoader(yaml.SafeLoader):
    """The safe loader, plus compose's ``!reset`` (clear what the file below set), as None."""


ComposeLoader.add_constructor("!reset", lambda loader, node: None)
