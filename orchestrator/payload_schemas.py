"""The JSON Schema of a command's payload, from the code that writes and reads it: the
fields its step's payload builder writes, typed by the saga's input schema (its sensitive
fields sealed), and the fields each version of its `PayloadSchema` declares."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator import input_schema
from orchestrator.saga.contracts import REQUIRED, Contracts, PayloadSchema
from orchestrator.saga.definition import PayloadBuilder, SagaDefinition

SEALED = {
    "type": "object",
    "description": "a sensitive field, sealed (AES-GCM) for the one participant that reads it",
    "required": ["enc", "ct", "mask"],
    "properties": {
        "enc": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$", "description": "key id"},
        "ct": {"type": "string", "description": "base64 of nonce and ciphertext"},
        "mask": {"type": "string", "description": "what viewers see instead"},
    },
    "additionalProperties": False,
}


def json_type(value: Any) -> str:
    types = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    return types.get(type(value), "array" if isinstance(value, list) else "null")


class _Probe(Mapping[str, Any]):
    """Stands for a value of the saga input (or context) while a payload builder runs: what
    the builder copies into the payload still says which input field it came from."""

    def __init__(self, schema: Mapping[str, Any], origin: str, key: str = "") -> None:
        self.schema = schema
        self.origin = origin
        self.key = key

    def __getitem__(self, key: str) -> _Probe:
        if self.origin == "context":
            return _Probe({"description": f"from the saga context: {key}"}, "context", key)
        return _Probe(self.schema.get("properties", {}).get(key, {}), "input", key)

    def __iter__(self) -> Any:
        return iter(self.schema.get("properties", {}))

    def __len__(self) -> int:
        return len(self.schema.get("properties", {}))

    def __str__(self) -> str:
        raise TypeError("a payload builder that formats a value: its field's type is unknown")

    def __format__(self, spec: str) -> str:
        return str(self)


def input_json_schema(definition: SagaDefinition) -> dict[str, Any]:
    """The saga input as it is stored (JSON), its sensitive fields sealed; {} when the
    definition validates its input with a plain function."""
    validate = definition.validate_input
    if not isinstance(validate, input_schema.SchemaValidator):
        return {}
    raw = validate.model.model_json_schema(mode="serialization", by_alias=True)
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    for field in input_schema.sensitive_fields(validate):
        clear = schema["properties"][field.path]
        schema["properties"][field.path] = {
            "description": f"sealed for {field.reader}, or (older commands) in clear",
            "oneOf": [SEALED, clear],
        }
    return schema


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {k: _inline(v, defs) for k, v in node.items() if k not in ("title", "$defs")}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def built_payload(build: PayloadBuilder, saga_input: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of what `build` writes: each field typed as the input field it copies;
    a field taken from the context (a reply's data) may be anything."""
    try:
        written = build(_Probe(saga_input, "input"), _Probe({}, "context"))
    except Exception:  # a builder that computes rather than copies: its fields are unknown
        return {"type": "object"}
    properties = {name: _written(value) for name, value in written.items()}
    return {"type": "object", "required": list(properties), "properties": properties}


def context_reads(build: PayloadBuilder) -> list[str]:
    """The keys of the saga context `build` copies: what earlier replies' data must give."""
    try:
        written = build(_Probe({}, "input"), _Probe({}, "context"))
    except Exception:  # a builder that computes rather than copies
        return []
    return [v.key for v in written.values() if isinstance(v, _Probe) and v.origin == "context"]


def _written(value: Any) -> dict[str, Any]:
    if isinstance(value, _Probe):
        return dict(value.schema)
    if value is None or isinstance(value, str | int | float | bool):
        return {"const": value}  # the same in every command
    return {}  # built of several values: anything


def versioned_payload(built: Mapping[str, Any], schema: PayloadSchema) -> dict[str, Any]:
    """A version's payload: its fields, typed as the builder writes them; a field with a
    default is optional. Unknown fields are allowed: a reader reads newer versions."""
    known = built.get("properties", {})
    properties = {}
    for name, default in schema.fields.items():
        spec = dict(known.get(name, {}))
        if default is not REQUIRED:
            spec["default"] = default
            if name not in known and default is not None:
                spec["type"] = json_type(default)
        properties[name] = spec
    required = [name for name, default in schema.fields.items() if default is REQUIRED]
    return {"type": "object", "required": required, "properties": properties}


def declared_versions(contracts: Contracts) -> dict[str, dict[int, PayloadSchema]]:
    # Contracts has no public listing of its schemas yet
    return contracts._schemas
