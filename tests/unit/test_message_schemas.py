"""The published message contracts: generated from the code, checked in under contracts/,
valid AsyncAPI, and never changed in a way that breaks a reader without a test failing.

tests/contract/asyncapi-3.0.0.schema.json is the official AsyncAPI 3.0.0 JSON Schema, the
file schemas/3.0.0.json of the npm package @asyncapi/specs 6.11.1
(https://github.com/asyncapi/spec-json-schemas), Apache License 2.0, copied unchanged.
"""

from __future__ import annotations

import ast
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry
from referencing.jsonschema import DRAFT7

from orchestrator import asyncapi, codec, payload_schemas
from orchestrator.example_inputs import EXAMPLE_INPUTS
from orchestrator.message_schemas import breaking_changes, published_definitions
from orchestrator.saga import messages
from orchestrator.testing import SagaHarness, check_compensation_matrix
from participants.contracts import CONTRACTS

ROOT = Path(__file__).resolve().parents[2]
CHECKED_IN = ROOT / "contracts"
ASYNCAPI_SCHEMA = ROOT / "tests" / "contract" / "asyncapi-3.0.0.schema.json"
REGENERATE = "run `orchestrator contracts export contracts` and commit the result"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return asyncapi.contract_files()


def checked_in_files() -> dict[str, str]:
    return {
        str(path.relative_to(CHECKED_IN)): path.read_text()
        for path in sorted(CHECKED_IN.rglob("*.json"))
    }


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


# -- the breaking-change checker -----------------------------------------------------------

BASE: dict[str, Any] = {
    "type": "object",
    "required": ["orderId"],
    "properties": {
        "orderId": {"type": "string"},
        "note": {"type": "string", "maxLength": 10},
        "outcome": {"enum": ["success", "failure"]},
        "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {}}}},
    },
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """BASE with the keyword at `path` (dot-separated) set to `value`, or removed for None."""
    schema = json.loads(json.dumps(BASE))
    *parents, last = path.split(".")
    node = schema
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return schema


@pytest.mark.parametrize(
    ("new", "rule", "where"),
    [
        (changed("properties.note", None), "field-removed", "note"),
        (
            changed("properties.orderId", None),
            "field-removed",
            "orderId: no longer in the schema (was required)",
        ),
        (changed("required", ["orderId", "note"]), "required-added", "note"),
        (changed("required", []), "required-dropped", "orderId"),
        (changed("properties.orderId.type", "integer"), "type-changed", "orderId"),
        (changed("properties.orderId.type", ["string", "null"]), "type-changed", "orderId"),
        (changed("properties.outcome.enum", ["success"]), "enum-narrowed", "outcome"),
        (changed("properties.orderId.format", "uuid"), "format-changed", "orderId"),
        (changed("properties.orderId.pattern", "^o-"), "pattern-changed", "orderId"),
        (changed("properties.note.maxLength", 5), "bound-tightened", "note"),
        (changed("additionalProperties", False), "additional-properties-tightened", "(root)"),
        (
            changed("properties.items.items.properties.sku", None),
            "field-removed",
            "items.[].sku",
        ),
    ],
)
def test_breaking_change_is_named_by_its_rule(new: dict[str, Any], rule: str, where: str) -> None:
    problems = breaking_changes(BASE, new)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{rule}: {where}")


@pytest.mark.parametrize(
    "new",
    [
        BASE,
        changed("properties.giftWrap", {"type": "boolean", "default": False}),
        changed("properties.outcome.enum", ["success", "failure", "retryable"]),
        changed("properties.note.maxLength", 20),
        changed("properties.orderId.description", "the order"),
    ],
)
def test_compatible_change_is_not_breaking(new: dict[str, Any]) -> None:
    assert breaking_changes(BASE, new) == []


def test_each_payload_version_is_a_compatible_change_of_the_one_before() -> None:
    files = {name: json.loads(text) for name, text in asyncapi.contract_files().items()}
    for message_type in ("payment.charge", "shipping.create"):
        versions = CONTRACTS.versions(message_type)
        for older, newer in itertools.pairwise(versions):
            old = files[f"schemas/{message_type}.v{older}.json"]["properties"]["payload"]
            new = files[f"schemas/{message_type}.v{newer}.json"]["properties"]["payload"]
            assert breaking_changes(old, new) == [], (message_type, newer)


# -- command payloads ----------------------------------------------------------------------

ORDER_INPUT = {
    "type": "object",
    "properties": {
        "orderId": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_payload_field_copied_from_the_input_has_the_input_fields_type() -> None:
    def build(inp: Any, ctx: Any) -> dict[str, Any]:
        return {"orderId": inp["orderId"], **inp["address"], "shipmentId": ctx.get("id")}

    assert payload_schemas.built_payload(build, ORDER_INPUT) == {
        "type": "object",
        "required": ["orderId", "city", "shipmentId"],
        "properties": {
            "orderId": {"type": "string"},
            "city": {"type": "string"},
            "shipmentId": {"description": "from the saga context: id"},
        },
    }


def test_a_payload_field_the_builder_computes_is_left_open() -> None:
    def build(inp: Any, ctx: Any) -> dict[str, Any]:
        return {"kind": "gift", "pair": [inp["orderId"], 1], "label": f"#{inp['orderId']}"}

    def build_literals(inp: Any, ctx: Any) -> dict[str, Any]:
        return {"kind": "gift", "pair": [inp["orderId"], 1]}

    assert payload_schemas.built_payload(build, ORDER_INPUT) == {"type": "object"}
    assert payload_schemas.built_payload(build_literals, ORDER_INPUT)["properties"] == {
        "kind": {"const": "gift"},
        "pair": {},
    }


# -- the checked-in contracts --------------------------------------------------------------


def test_checked_in_contracts_are_the_generated_ones(generated: dict[str, str]) -> None:
    checked_in = checked_in_files()
    missing = sorted(generated.keys() - checked_in.keys())
    extra = sorted(checked_in.keys() - generated.keys())
    stale = sorted(
        p for p in generated.keys() & checked_in.keys() if generated[p] != checked_in[p]
    )
    assert (missing, extra, stale) == ([], [], []), (
        f"contracts/ is not what the code generates: missing {missing}, no longer published "
        f"{extra}, changed {stale}; {REGENERATE}"
    )


def test_code_changes_no_checked_in_schema_in_a_breaking_way(generated: dict[str, str]) -> None:
    problems = []
    for path, text in checked_in_files().items():
        if not path.startswith("schemas/"):
            continue
        if path not in generated:
            problems.append(f"message-removed: {path} is no longer published")
            continue
        found = breaking_changes(json.loads(text), json.loads(generated[path]))
        problems += [f"{path}: {problem}" for problem in found]
    assert problems == [], (
        "the code changes published message schemas in a way that breaks their readers or "
        "writers; add a new payload version (fields with defaults) instead:\n"
        + "\n".join(problems)
    )


def test_export_refuses_to_break_a_published_schema(tmp_path: Path) -> None:
    asyncapi.export(tmp_path)
    published = tmp_path / "schemas" / "payment.charge.v1.json"
    schema = json.loads(published.read_text())
    schema["properties"]["payload"]["properties"]["legacyField"] = {"type": "string"}
    published.write_text(json.dumps(schema))
    (tmp_path / "schemas" / "retired.command.v1.json").write_text("{}")

    with pytest.raises(asyncapi.BreakingChangeError) as refused:
        asyncapi.export(tmp_path)
    assert "payment.charge.v1: field-removed: payload.legacyField" in str(refused.value)
    assert "message-removed: retired.command.v1" in str(refused.value)
    assert json.loads(published.read_text()) == schema, "nothing written"

    asyncapi.export(tmp_path, allow_breaking=True)
    assert "legacyField" not in published.read_text()
    assert not (tmp_path / "schemas" / "retired.command.v1.json").exists()


def asyncapi_validator() -> jsonschema.Draft7Validator:
    """The official schema bundles its parts under definitions, each keyed by its $id."""
    schema = json.loads(ASYNCAPI_SCHEMA.read_text())
    parts = schema["definitions"].items()
    registry: Registry[Any] = Registry().with_resources(
        (uri, DRAFT7.create_resource(part)) for uri, part in parts
    )
    return jsonschema.Draft7Validator(schema, registry=registry)


@pytest.mark.parametrize("source", ["generated", "checked in"])
def test_asyncapi_document_is_valid_asyncapi_3(source: str, generated: dict[str, str]) -> None:
    text = (
        generated["asyncapi.json"]
        if source == "generated"
        else checked_in_files()["asyncapi.json"]
    )
    errors = [
        f"{e.json_path}: {e.message[:300]}"
        for e in asyncapi_validator().iter_errors(json.loads(text))
    ]
    assert errors == []


def test_asyncapi_validator_refuses_a_broken_document(generated: dict[str, str]) -> None:
    document = json.loads(generated["asyncapi.json"])
    document["channels"]["replies"]["address"] = 42
    del document["info"]
    assert len(list(asyncapi_validator().iter_errors(document))) >= 2


def test_every_reference_of_the_document_resolves(generated: dict[str, str]) -> None:
    document = json.loads(generated["asyncapi.json"])
    for ref in references(document):
        if ref.startswith("#/"):
            node: Any = document
            for part in ref[2:].split("/"):
                node = node[part]
        else:
            assert ref in generated, ref


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


def test_every_schema_is_valid_and_has_a_valid_example(generated: dict[str, str]) -> None:
    for path, text in generated.items():
        if not path.startswith("schemas/"):
            continue
        schema = json.loads(text)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["examples"], path
        for example in schema["examples"]:
            validator(schema).validate(example)


# -- the contracts cover what the code sends -----------------------------------------------


def test_every_message_of_the_pure_core_matches_its_schema(generated: dict[str, str]) -> None:
    """Every failure, timeout and abort of every step of the published sagas, with duplicate
    deliveries: each command, reply and event is valid under its published schema."""
    seen: list[messages.Message] = []
    apply, deliver = SagaHarness._apply, SagaHarness.deliver

    def applying(harness: SagaHarness, decision: Any) -> None:
        seen.extend(out.message for out in decision.outgoing)  # commands and events
        apply(harness, decision)

    def delivering(harness: SagaHarness, reply: messages.Message) -> None:
        seen.append(reply)
        deliver(harness, reply)

    with pytest.MonkeyPatch.context() as patch:  # the matrix builds its own harnesses
        patch.setattr(SagaHarness, "_apply", applying)
        patch.setattr(SagaHarness, "deliver", delivering)
        for definition in published_definitions():
            saga_input = EXAMPLE_INPUTS[definition.name]
            assert check_compensation_matrix(definition, saga_input) == []
    assert {m.kind for m in seen} == set(messages.Kind)
    for message in seen:
        path = f"schemas/{message.message_type}.v{message.version}.json"
        assert path in generated, f"{path} is not published"
        validator(json.loads(generated[path])).validate(codec.to_dict(message))


def test_published_events_are_those_the_saga_core_emits(generated: dict[str, str]) -> None:
    core = ROOT / "orchestrator" / "saga"
    emitted = {
        call.args[0].value
        for path in core.glob("*.py")
        for call in ast.walk(ast.parse(path.read_text()))
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "emit"
        and call.args
        and isinstance(call.args[0], ast.Constant)
    }
    published = {
        name.removeprefix("schemas/").rsplit(".v", 1)[0]
        for name, text in generated.items()
        if name.startswith("schemas/")
        and json.loads(text).get("properties", {}).get("kind", {}).get("const") == "event"
    }
    assert emitted == published
