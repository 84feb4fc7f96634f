"""The JSON wire format of the message envelope, and its Kafka headers."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any

from orchestrator.saga import messages
from orchestrator.saga.errors import UndecodableMessageError

_REQUIRED = ("messageId", "messageType", "version", "kind", "timestamp", "sagaId", "source")


def to_dict(message: messages.Message) -> dict[str, Any]:
    return {
        "messageId": message.message_id,
        "messageType": message.message_type,
        "version": message.version,
        "kind": message.kind.value,
        "timestamp": message.timestamp.isoformat().replace("+00:00", "Z"),
        "sagaId": message.saga_id,
        "sagaType": message.saga_type,
        "step": message.step,
        "attempt": message.attempt,
        "correlationId": message.correlation_id,
        "causationId": message.causation_id,
        "source": message.source,
        "payload": dict(message.payload),
        **({"traceId": message.trace_id} if message.trace_id else {}),
    }


def encode(message: messages.Message) -> bytes:
    return json.dumps(to_dict(message), separators=(",", ":")).encode()


def decode(raw: bytes | None) -> messages.Message:
    if raw is None:
        raise UndecodableMessageError("the message has no value")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UndecodableMessageError(f"the message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise UndecodableMessageError("the message is not a JSON object")
    missing = [field for field in _REQUIRED if field not in data]
    if missing:
        raise UndecodableMessageError(f"the envelope lacks {', '.join(missing)}")
    if not isinstance(data["version"], int) or data["version"] < 1:
        raise UndecodableMessageError(f"version {data['version']!r} is not a positive integer")
    try:
        message = messages.Message(
            message_id=str(data["messageId"]),
            message_type=str(data["messageType"]),
            version=int(data["version"]),
            kind=messages.Kind(data["kind"]),
            timestamp=datetime.fromisoformat(str(data["timestamp"]).replace("Z", "+00:00")),
            saga_id=str(data["sagaId"]),
            saga_type=str(data.get("sagaType", "")),
            step=str(data.get("step", "")),
            attempt=int(data.get("attempt", 0)),
            causation_id=data.get("causationId"),
            source=str(data["source"]),
            payload=_object(data.get("payload", {})),
            trace_id=_trace_id(data.get("traceId")),
        )
    except (ValueError, TypeError) as exc:
        raise UndecodableMessageError(f"the envelope is malformed: {exc}") from None
    for name, value in (("messageId", message.message_id), ("sagaId", message.saga_id)):
        if not _is_uuid(value):
            raise UndecodableMessageError(f"{name} {value!r} is not a UUID")
    if message.kind is messages.Kind.REPLY:
        _check_reply(message)
    return message


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("payload must be a JSON object")
    return value


def _check_reply(message: messages.Message) -> None:
    try:
        message.outcome  # noqa: B018  # validates the outcome
    except (KeyError, ValueError):
        raise UndecodableMessageError(
            f"reply {message.message_id} has no valid payload.outcome "
            f"(one of {', '.join(o.value for o in messages.Outcome)})"
        ) from None


def headers(message: messages.Message) -> list[tuple[str, bytes]]:
    return [
        ("messageType", message.message_type.encode()),
        ("traceparent", traceparent(message).encode()),
    ]


def traceparent(message: messages.Message) -> str:
    """A W3C trace context: the saga's trace (the one its REST request came with, else one
    derived from the saga id) and a span for this message."""
    trace_id = message.trace_id or message.saga_id.replace("-", "")[:32].ljust(32, "0")
    span_id = message.message_id.replace("-", "")[:16].ljust(16, "0")
    return f"00-{trace_id}-{span_id}-01"


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")


def trace_id_of(header: str | None) -> str:
    """The trace id of a W3C traceparent header, or "" when it is absent or malformed."""
    match = _TRACEPARENT.match((header or "").strip().lower())
    if match is None or match[1] == "0" * 32:
        return ""
    return match[1]


def _trace_id(value: Any) -> str:
    if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{32}", value):
        return value
    return ""
