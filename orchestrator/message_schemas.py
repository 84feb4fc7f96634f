"""JSON Schemas (draft 2020-12) of every message on the wire, generated from the code that
writes and reads them, and (`breaking_changes`) which schema changes break a reader.

- The envelope: the fields `codec.to_dict` writes, typed by what `codec.decode` refuses.
- A command's payload: see `payload_schemas`; the saga definitions name the commands.
- A reply's payload: outcome, data and error, as the participant kit writes them.
- An event's payload: the lifecycle facts the saga core emits.

Every schema describes the whole record value (the envelope with its payload) of one message
type and version: `<message type>.v<version>.json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from orchestrator import codec, payload_schemas
from orchestrator.saga import messages
from orchestrator.saga import saga as core
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.definition import SagaDefinition, Step
from orchestrator.saga.errors import UndecodableMessageError
from orchestrator.saga.machine import SagaStatus
from orchestrator.schema_changes import breaking_changes

__all__ = ["MessageContract", "breaking_changes", "envelope_schema", "message_contracts"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
ORCHESTRATOR = "orchestrator"
# What the envelope's fields mean; their types, formats and presence come from the codec.
_ENVELOPE_TEXT = {
    "messageId": "unique per message: the idempotency key",
    "messageType": "what the message says, e.g. inventory.reserve",
    "version": "the schema version of the payload",
    "kind": "command, reply or event",
    "timestamp": "when it was written, RFC 3339 UTC",
    "sagaId": "the saga it belongs to; also the Kafka record key",
    "sagaType": "the saga's definition name",
    "step": "the saga step it concerns ('' for events)",
    "attempt": "the attempt of the step's command it is or answers",
    "correlationId": "the saga id",
    "causationId": "the messageId of the message that caused this one",
    "source": "who wrote it: orchestrator or a participant's name",
    "payload": "the message's own fields",
    "traceId": "the W3C trace id that follows the saga (32 hex digits)",
    "deadline": "a command's: after it the orchestrator no longer waits for it",
}
_BOUNDS = {"version": {"minimum": 1, "maximum": 2**31 - 1}, "attempt": {"minimum": 0}}
_READ_AS = {"correlationId": "sagaId"}  # written, not read: it is the saga id
_PATTERNS = {"traceId": "^[0-9a-f]{32}$"}  # codec drops any other trace id


@dataclasses.dataclass(frozen=True)
class MessageContract:
    """One message type at one payload version: who sends it, where, and its payload."""

    message_type: str
    version: int
    kind: messages.Kind
    source: str
    participant: str | None  # its commands topic; None for the replies and events topics
    payload: Mapping[str, Any]
    description: str

    @property
    def name(self) -> str:
        return f"{self.message_type}.v{self.version}"

    def schema(self) -> dict[str, Any]:
        """The JSON Schema of the whole record value."""
        envelope = envelope_schema()
        properties = {
            **envelope["properties"],
            "messageType": {**envelope["properties"]["messageType"], "const": self.message_type},
            "version": {**envelope["properties"]["version"], "const": self.version},
            "kind": {**envelope["properties"]["kind"], "const": self.kind.value},
            "source": {**envelope["properties"]["source"], "const": self.source},
            "payload": dict(self.payload),
        }
        return {
            "$schema": DIALECT,
            "title": self.name,
            "description": self.description,
            **envelope,
            "properties": properties,
        }


# -- the envelope --------------------------------------------------------------------------


def _sample(causation_id: str | None, traced: bool) -> messages.Message:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return messages.Message(
        message_id="00000000-0000-4000-8000-000000000001",
        message_type="x.y",
        kind=messages.Kind.COMMAND,
        timestamp=at,
        saga_id="00000000-0000-4000-8000-000000000000",
        saga_type="x",
        step="y",
        attempt=1,
        causation_id=causation_id,
        source=ORCHESTRATOR,
        payload={},
        trace_id="0" * 31 + "1" if traced else "",
        deadline=at if traced else None,
    )


def _decodes(written: Mapping[str, Any], field: str, value: Any) -> bool:
    changed = {**written, field: value}
    try:
        codec.decode(json.dumps(changed).encode())
    except UndecodableMessageError:
        return False
    return True


def _string_format(written: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The format the codec holds a string field to, found by what it refuses."""
    if _decodes(written, _READ_AS.get(field, field), "neither a uuid nor a time"):
        return {}
    if _decodes(written, _READ_AS.get(field, field), messages.new_id()):
        return {"format": "uuid"}
    if _decodes(written, _READ_AS.get(field, field), "2026-01-01T00:00:00Z"):
        return {"format": "date-time"}
    return {}


def envelope_schema() -> dict[str, Any]:
    """Every field `codec.to_dict` writes; required unless the codec leaves it out when it
    has no value; nullable when it writes null."""
    full = codec.to_dict(_sample(messages.new_id(), traced=True))
    bare = codec.to_dict(_sample(None, traced=False))
    properties: dict[str, Any] = {}
    for field, value in full.items():
        nullable = ["null"] if bare.get(field, 0) is None else []
        types = [payload_schemas.json_type(value), *nullable]
        spec: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
        if isinstance(value, str):
            spec |= _string_format(full, field)
        if field == "kind":
            spec["enum"] = [k.value for k in messages.Kind]
        spec |= _BOUNDS.get(field, {})
        if field in _PATTERNS:
            spec["pattern"] = _PATTERNS[field]
        properties[field] = {"description": _ENVELOPE_TEXT.get(field, ""), **spec}
    return {
        "type": "object",
        "required": list(bare),
        "properties": properties,
        "additionalProperties": True,  # the codec ignores fields it does not know
    }


# -- the catalogue -------------------------------------------------------------------------


def _reply_payload(data: Mapping[str, Any]) -> dict[str, Any]:
    failed = [o.value for o in messages.Outcome if o is not messages.Outcome.SUCCESS]
    return {
        "type": "object",
        "required": ["outcome"],
        "properties": {
            "outcome": {"enum": [o.value for o in messages.Outcome]},
            "data": {"type": "object", **data},
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "if": {"properties": {"outcome": {"enum": failed}}},
        "then": {"required": ["error"]},
    }


_ACTION_DATA = {"description": "on success: merged into the saga context"}
_RESOLUTION_DATA = {
    "description": "on success: whether the action was applied (with its result) or is fenced",
    "properties": {
        "resolution": {"enum": [core.APPLIED, core.FENCED]},
        "result": {"type": "object", "description": "the applied action's stored result"},
        "compensated": {"type": "boolean"},
    },
}
EVENTS: dict[str, tuple[SagaStatus, dict[str, Any], list[str]]] = {
    "saga.started": (
        SagaStatus.RUNNING,
        {"version": {"type": "integer", "minimum": 1, "description": "definition version"}},
        ["version"],
    ),
    "saga.completed": (SagaStatus.COMPLETED, {"context": {"type": "object"}}, ["context"]),
    "saga.compensated": (SagaStatus.COMPENSATED, {}, []),
    "saga.failed": (
        SagaStatus.FAILED,
        {
            "step": {"type": "string"},
            "cause": {"type": "string"},
            "reason": {"type": "object", "description": "why the step after the pivot lost"},
            "error": {"type": "object", "description": "the last compensation's error"},
        },
        ["step", "cause"],
    ),
}


def _event(message_type: str) -> MessageContract:
    status, properties, required = EVENTS[message_type]
    payload = {
        "type": "object",
        "required": ["status", *required],
        "properties": {"status": {"const": status.value}, **properties},
    }
    return MessageContract(
        message_type,
        messages.ENVELOPE_VERSION,
        messages.Kind.EVENT,
        ORCHESTRATOR,
        None,
        payload,
        f"the saga is {status.value}",
    )


def _commands(
    definition: SagaDefinition, step: Step, contracts: Contracts
) -> Iterable[MessageContract]:
    saga_input = payload_schemas.input_json_schema(definition)
    sent = [(step.command, step.build, "action")]
    if step.compensation and step.build_compensation:
        sent.append((step.compensation, step.build_compensation, "compensation"))
    for command_type, build, role in sent:
        built = payload_schemas.built_payload(build, saga_input)
        versions = payload_schemas.declared_versions(contracts).get(command_type, {})
        for version in contracts.versions(command_type):
            payload = built
            if versions:
                payload = payload_schemas.versioned_payload(built, versions[version])
            text = f"the {role} of step {step.name} of saga {definition.name}"
            yield MessageContract(
                command_type,
                version,
                messages.Kind.COMMAND,
                ORCHESTRATOR,
                step.participant,
                payload,
                f"{text}, to {step.participant}",
            )


def _resolve(participant: str, asks_about: Sequence[str]) -> MessageContract:
    payload = {
        "type": "object",
        "required": ["command", "attempt"],
        "properties": {
            "command": {"enum": list(asks_about), "description": "the action in question"},
            "attempt": {"type": "integer", "minimum": 0, "description": "its latest attempt"},
        },
    }
    text = f"asks {participant} whether an action took effect, and fences it if not"
    return MessageContract(
        f"{participant}.resolve",
        messages.ENVELOPE_VERSION,
        messages.Kind.COMMAND,
        ORCHESTRATOR,
        participant,
        payload,
        text,
    )


def _reply(command: MessageContract) -> MessageContract:
    assert command.participant is not None
    resolve = command.message_type == f"{command.participant}.resolve"
    return MessageContract(
        command.message_type + messages.REPLY_SUFFIX,
        messages.ENVELOPE_VERSION,
        messages.Kind.REPLY,
        command.participant,
        None,
        _reply_payload(_RESOLUTION_DATA if resolve else _ACTION_DATA),
        f"{command.participant}'s answer to {command.message_type}",
    )


def published_definitions() -> list[SagaDefinition]:
    """The saga definitions this project ships (not those of tests or installed packages)."""
    from orchestrator import sagas

    return [d for module in sagas.builtin_modules() for d in sagas.load_definitions(module)]


def message_contracts(
    definitions: Sequence[SagaDefinition], contracts: Contracts
) -> list[MessageContract]:
    """Every message the definitions make the orchestrator send, the participants' replies
    to them and the saga events, in a stable order."""
    found: dict[str, MessageContract] = {}
    asks: dict[str, list[str]] = {}
    for definition in definitions:
        for step in definition.steps:
            for command in _commands(definition, step, contracts):
                found.setdefault(command.name, command)
            asks.setdefault(step.participant, [])
            if step.command not in asks[step.participant]:
                asks[step.participant].append(step.command)
    for participant, actions in asks.items():
        resolve = _resolve(participant, actions)
        found[resolve.name] = resolve
    for command in list(found.values()):  # one reply per command type, whatever its versions
        reply = _reply(command)
        found.setdefault(reply.name, reply)
    for event_type in EVENTS:
        event = _event(event_type)
        found[event.name] = event
    return [found[name] for name in sorted(found)]
