"""The whole message surface as one AsyncAPI 3.0.0 document, and `export`: the document and
every message's JSON Schema (`message_schemas`), with examples (`message_examples`), as files.

`orchestrator contracts export DIR` writes DIR/asyncapi.json and DIR/schemas/*.json.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import codec, message_examples, signing
from orchestrator.example_inputs import EXAMPLE_INPUTS
from orchestrator.message_schemas import (
    DIALECT,
    MessageContract,
    message_contracts,
    published_definitions,
)
from orchestrator.saga import messages
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.errors import OrchestratorError
from orchestrator.schema_changes import breaking_changes
from orchestrator.settings import Settings
from orchestrator.transport.dead_letters import ORIGIN_HEADERS
from orchestrator.transport.ingress import MAX_KEY_CHARS
from orchestrator.transport.topics import DLQ_SUFFIX

ASYNCAPI = "3.0.0"
SCHEMA_FORMAT = "application/schema+json;version=2020-12"
NAMESPACE = "{namespace}"
# The envelope's version: what a reader of these contracts must understand first.
CONTRACTS_VERSION = f"{messages.ENVELOPE_VERSION}.0.0"
START = "saga.start.v1"  # the value of a record on the ingress topic (not an envelope)
DESCRIPTION = (
    "The commands the orchestrator sends to each participant, their replies, the saga "
    "events, the ingress of saga starts and the dead-letter topics. Every record is keyed "
    "by its saga id (a start by its idempotency key) and carries one JSON envelope; each "
    "message type and payload version has its own JSON Schema under schemas/."
)
_HEADER_TEXT = {
    "messageType": {"type": "string", "description": "the envelope's messageType"},
    "traceparent": {
        "type": "string",
        "pattern": "^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
        "description": "W3C trace context: the saga's trace, a span for this message",
    },
    signing.HEADER: {
        "type": "string",
        "pattern": "^[A-Za-z0-9_.-]{1,64}:[0-9a-f]{64}$",
        "description": "<key id>:<hex HMAC-SHA256 of the record value> by the sender's key",
    },
}
_KAFKA_BINDING = "0.5.0"


def _channel_of(contract: MessageContract) -> str:
    if contract.participant is not None:
        return contract.participant
    return "events" if contract.kind is messages.Kind.EVENT else "replies"


def _channel_id(channel: str) -> str:
    return channel if channel in ("replies", "events", "starts") else f"{channel}Commands"


def envelope_headers() -> dict[str, Any]:
    """The headers `codec.headers` writes, and the signature."""
    names = [name for name, _ in codec.headers(_example_message())] + [signing.HEADER]
    return {
        "type": "object",
        "required": names,
        "properties": {name: _HEADER_TEXT.get(name, {"type": "string"}) for name in names},
    }


def _example_message() -> messages.Message:
    return messages.event(
        message_type="saga.started",
        saga_id="00000000-0000-4000-8000-000000000000",
        saga_type="order",
        now=datetime(2026, 1, 1, tzinfo=UTC),
        payload={},
        causation_id=None,
    )


def _example_headers(contract: MessageContract, example: Mapping[str, Any]) -> dict[str, str]:
    message = codec.decode(json.dumps(example).encode())
    value = codec.encode(message)
    recipient = contract.participant if contract.kind is messages.Kind.COMMAND else None
    keys = signing.MessageKeys(development=True)
    signed = [keys.sign(value, contract.source, recipient)]
    return {name: raw.decode() for name, raw in [*codec.headers(message), *signed]}


def _message(contract: MessageContract, example: Mapping[str, Any] | None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": contract.message_type,
        "title": contract.name,
        "summary": contract.description,
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/envelopeHeaders"},
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": _file(contract.name)}},
        "correlationId": {"$ref": "#/components/correlationIds/sagaId"},
        "bindings": {"$ref": "#/components/messageBindings/sagaKey"},
        "x-kind": contract.kind.value,
    }
    if example is not None:
        headers = _example_headers(contract, example)
        found["examples"] = [{"name": contract.name, "headers": headers, "payload": example}]
    return found


def _file(name: str) -> str:
    return f"schemas/{name}.json"


def start_schema() -> dict[str, Any]:
    """The value of a record on the ingress topic, as `ingress.decode_start` reads it."""
    return {
        "$schema": DIALECT,
        "title": START,
        "description": "starts a saga, exactly once per idempotency key (else the record key)",
        "type": "object",
        "required": ["type", "input"],
        "properties": {
            "type": {"type": "string", "minLength": 1, "maxLength": 128},
            "input": {"type": "object", "description": "the saga type's input"},
            "version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
            "sagaId": {"type": "string", "format": "uuid"},
            "idempotencyKey": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS},
        },
        "additionalProperties": False,
        "examples": [{"type": "order", "input": EXAMPLE_INPUTS["order"]}],
    }


def _channels(contracts: Sequence[MessageContract]) -> dict[str, Any]:
    topics = Settings.model_construct(topic_namespace=NAMESPACE)
    members: dict[str, list[str]] = {"starts": [START]}
    for contract in contracts:
        members.setdefault(_channel_of(contract), []).append(contract.name)
    channels = {}
    namespace = {"namespace": {"$ref": "#/components/parameters/namespace"}}
    for channel, names in sorted(members.items()):
        address = topics.topic(channel)
        channels[_channel_id(channel)] = {
            "address": address,
            "title": address,
            "parameters": namespace,
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in names},
        }
        channels[_channel_id(channel) + "DeadLetters"] = {
            "address": address + DLQ_SUFFIX,
            "title": address + DLQ_SUFFIX,
            "description": f"what the consumer of {address} could not take, with why",
            "parameters": namespace,
            "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        }
    return channels


def _operations(channels: Mapping[str, Any]) -> dict[str, Any]:
    """The orchestrator's side: it sends commands and events, takes replies and starts, and
    dead-letters what it cannot take. Each participant takes its commands and sends replies
    and dead letters of its commands: the same channels, the other way round."""
    operations = {}
    for channel_id, channel in channels.items():
        dead = channel_id.endswith("DeadLetters")
        takes = channel_id in ("replies", "starts")
        if dead and channel_id.removesuffix("DeadLetters") not in ("replies", "starts"):
            continue  # a participant's
        action = "send" if dead or not takes else "receive"
        operations[f"{action}{channel_id[0].upper()}{channel_id[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{name}"}
                for name in channel["messages"]
            ],
        }
    return operations


def document(
    contracts: Sequence[MessageContract], examples: Mapping[str, Any], version: str
) -> dict[str, Any]:
    channels = _channels(contracts)
    start_message = {
        "name": "saga.start",
        "title": START,
        "summary": "starts a saga from an event",
        "contentType": "application/json",
        "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": {"$ref": _file(START)}},
        "bindings": {"kafka": {"key": {"type": "string", "description": "idempotency key"}}},
    }
    dead_letter = {
        "name": "deadLetter",
        "summary": "a record its consumer could not take: its value and headers unchanged",
        "headers": {
            "type": "object",
            "required": list(ORIGIN_HEADERS),
            "properties": {name: {"type": "string"} for name in ORIGIN_HEADERS},
        },
        "payload": {"description": "the original record's value, as it came"},
    }
    return {
        "asyncapi": ASYNCAPI,
        "info": {
            "title": "Saga orchestrator messages",
            "version": version,
            "description": DESCRIPTION,
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": _operations(channels),
        "components": {
            "messages": {
                **{c.name: _message(c, examples.get(c.name)) for c in contracts},
                START: start_message,
                "deadLetter": dead_letter,
            },
            "schemas": {"envelopeHeaders": envelope_headers()},
            "parameters": {
                "namespace": {
                    "default": "saga",
                    "description": "SAGA_TOPIC_NAMESPACE: the topics' common prefix",
                }
            },
            "correlationIds": {
                "sagaId": {"description": "the saga", "location": "$message.payload#/sagaId"}
            },
            "messageBindings": {
                "sagaKey": {
                    "kafka": {
                        "key": {"type": "string", "format": "uuid", "description": "the saga id"},
                        "bindingVersion": _KAFKA_BINDING,
                    }
                }
            },
        },
    }


def contract_files(
    definitions: Sequence[SagaDefinition] | None = None, contracts: Contracts | None = None
) -> dict[str, str]:
    """Every file of the published contracts, by its path under the export directory."""
    from participants.contracts import CONTRACTS

    definitions = published_definitions() if definitions is None else definitions
    contracts = CONTRACTS if contracts is None else contracts
    found = message_contracts(definitions, contracts)
    examples = message_examples.examples(definitions, contracts)
    files = {"asyncapi.json": _json(document(found, examples, CONTRACTS_VERSION))}
    for contract in found:
        schema = contract.schema()
        if contract.name in examples:
            schema["examples"] = [examples[contract.name]]
        files[_file(contract.name)] = _json(schema)
    files[_file(START)] = _json(start_schema())
    return files


class BreakingChangeError(OrchestratorError):
    """A published message schema would change in a way its readers or writers cannot
    survive: publish a new payload version instead."""


def export(directory: Path, allow_breaking: bool = False) -> list[Path]:
    """Write the contracts under `directory`, removing schema files no longer published.
    A schema already there is the published one: a breaking change to it (or its removal)
    is refused, naming each rule, unless `allow_breaking`; nothing is written then."""
    files = contract_files()
    if not allow_breaking:
        problems = breaking_exports(directory, files)
        if problems:
            raise BreakingChangeError(
                "breaking changes to published message schemas (add a payload version "
                "instead, or pass --allow-breaking):\n  " + "\n  ".join(problems)
            )
    schemas = directory / "schemas"
    schemas.mkdir(parents=True, exist_ok=True)
    for stale in schemas.glob("*.json"):
        if f"schemas/{stale.name}" not in files:
            stale.unlink()
    written = []
    for relative, text in files.items():
        path = directory / relative
        path.write_text(text)
        written.append(path)
    return written


def breaking_exports(directory: Path, files: Mapping[str, str]) -> list[str]:
    """What exporting `files` would break in the schemas published under `directory`."""
    problems = []
    for published in sorted((directory / "schemas").glob("*.json")):
        relative = f"schemas/{published.name}"
        if relative not in files:
            problems.append(f"message-removed: {published.stem}: no longer published")
            continue
        old, new = json.loads(published.read_text()), json.loads(files[relative])
        problems += [f"{published.stem}: {p}" for p in breaking_changes(old, new)]
    return problems


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
