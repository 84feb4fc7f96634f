"""Which changes of a message's JSON Schema break its readers or writers.

A message schema is shared by the versions of code that write and read it. A change is
breaking when a message valid under one side is refused or misread by the other: a field
removed or no longer required (older readers expect it), a field newly required (older
messages lack it), a type changed, an enum narrowed, a format, pattern or bound changed,
unknown fields refused. Adding optional fields and loosening are not breaking.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_TIGHTER_IF_LARGER = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_TIGHTER_IF_SMALLER = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any], at: str = "") -> list[str]:
    """The changes from `old` to `new` that break a reader or a writer of the other
    version, each `rule: where: what`; [] when `new` is a compatible change."""
    where = at or "(root)"
    problems = _type_changes(old, new, where) + _constraint_changes(old, new, where)
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(old_props.keys() - new_props.keys()):
        was = " (was required)" if name in old_required else ""
        problems.append(f"field-removed: {_join(at, name)}: no longer in the schema{was}")
    for name in sorted(new_required - old_required):
        problems.append(f"required-added: {_join(at, name)}: older messages may lack it")
    for name in sorted((old_required - new_required) & new_props.keys()):
        problems.append(f"required-dropped: {_join(at, name)}: older readers expect it")
    for name in sorted(old_props.keys() & new_props.keys()):
        problems += breaking_changes(old_props[name], new_props[name], _join(at, name))
    if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
        problems += breaking_changes(old["items"], new["items"], _join(at, "[]"))
    if old.get("additionalProperties", True) is not False and (
        new.get("additionalProperties", True) is not True
    ):
        problems.append(f"additional-properties-tightened: {where}: unknown fields now refused")
    return problems


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def _types(schema: Mapping[str, Any]) -> set[str]:
    declared = schema.get("type")
    return set([declared] if isinstance(declared, str) else declared or [])


def _type_changes(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
    old_types, new_types = _types(old), _types(new)
    if old_types != new_types and (old_types or new_types):
        return [f"type-changed: {where}: {sorted(old_types)} -> {sorted(new_types)}"]
    return []


def _constraint_changes(old: Mapping[str, Any], new: Mapping[str, Any], where: str) -> list[str]:
    problems = []
    old_values = old.get("enum", [old["const"]] if "const" in old else None)
    new_values = new.get("enum", [new["const"]] if "const" in new else None)
    if new_values is not None and (
        old_values is None or set(map(repr, old_values)) - set(map(repr, new_values))
    ):
        problems.append(f"enum-narrowed: {where}: {old_values} -> {new_values}")
    for keyword in ("format", "pattern"):
        if new.get(keyword) is not None and new.get(keyword) != old.get(keyword):
            problems.append(f"{keyword}-changed: {where}: {old.get(keyword)} -> {new[keyword]}")
    for keyword in (*_TIGHTER_IF_LARGER, *_TIGHTER_IF_SMALLER):
        before, after = old.get(keyword), new.get(keyword)
        larger = keyword in _TIGHTER_IF_LARGER
        if after is not None and (
            before is None or (after > before if larger else after < before)
        ):
            problems.append(f"bound-tightened: {where}: {keyword} {before} -> {after}")
    return problems
