"""Breaking-change detection between two versions of an event's JSON Schema.

Consumers of ``payment.events`` parse events written by older and newer workers alike,
so an event schema may only grow: new optional fields, new event types. This lists what
would break a consumer built against the old schema.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]


def _resolve(node: Schema, root: Schema) -> Schema:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = root["$defs"][name]
    return node


def _types(node: Schema) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, list):
        return set(declared)
    return {declared} if declared else set()


def _values(node: Schema) -> set[Any]:
    if "const" in node:
        return {node["const"]}
    return set(node.get("enum", []))


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Every change from ``old`` to ``new`` that a consumer of ``old`` would trip over."""
    problems: list[str] = []
    _compare(old, new, old_root=old, new_root=new, path="$", problems=problems)
    return problems


def _compare(
    old: Schema, new: Schema, *, old_root: Schema, new_root: Schema, path: str, problems: list[str]
) -> None:
    old = _resolve(old, old_root)
    new = _resolve(new, new_root)
    if _types(old) and _types(new) and not _types(old) <= _types(new):
        problems.append(f"{path}: type {sorted(_types(old))} became {sorted(_types(new))}")
    removed_values = _values(old) - _values(new) if _values(new) or "enum" in new else set()
    if removed_values:
        problems.append(f"{path}: values removed: {sorted(map(str, removed_values))}")
    newly_required = set(new.get("required", [])) - set(old.get("required", []))
    if newly_required:
        problems.append(f"{path}: newly required: {sorted(newly_required)}")
    old_properties = old.get("properties", {})
    new_properties = new.get("properties", {})
    for name, old_property in old_properties.items():
        if name not in new_properties:
            problems.append(f"{path}.{name}: removed")
        else:
            _compare(
                old_property,
                new_properties[name],
                old_root=old_root,
                new_root=new_root,
                path=f"{path}.{name}",
                problems=problems,
            )
    _compare_alternatives(
        old, new, old_root=old_root, new_root=new_root, path=path, problems=problems
    )


def _compare_alternatives(
    old: Schema, new: Schema, *, old_root: Schema, new_root: Schema, path: str, problems: list[str]
) -> None:
    """Each alternative of a union (matched by title) must still be there, compatibly."""
    for keyword in ("anyOf", "oneOf"):
        if keyword not in old:
            continue
        new_members = {
            _resolve(member, new_root).get("title", str(i)): member
            for i, member in enumerate(new.get(keyword, []))
        }
        for i, member in enumerate(old[keyword]):
            title = _resolve(member, old_root).get("title", str(i))
            if title not in new_members:
                problems.append(f"{path}: alternative {title} removed")
            else:
                _compare(
                    member,
                    new_members[title],
                    old_root=old_root,
                    new_root=new_root,
                    path=f"{path}<{title}>",
                    problems=problems,
                )
