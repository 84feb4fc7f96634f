"""The JSON wire format of the message envelope, and its Kafka headers."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from orchestrator.faults import holds_nul
from orchestrator.saga import messages
from orchestrator.saga.errors import UndecodableMessageError

_REQUIRED = ("messageId", "messageType", "version", "kind", "timestamp", "sagaId", "source")


def to_dict(message: messages.Message) -> dict[str, Any]:
    return {
        "messageId": message.message_id,
        "messageType": message.message_type,
        "version": message.version,
        "kind": message.kind.value,
        "timestamp": _rfc3339(message.timestamp),
        "sagaId": message.saga_id,
        "sagaType": message.saga_type,
        "step": message.step,
        "attempt": message.attempt,
        "correlationId": message.correlation_id,
        "causationId": message.causation_id,
        "source": message.source,
        "payload": dict(message.payload),
        **({"traceId": message.trace_id} if message.trace_id else {}),
        **({"deadline": _rfc3339(message.deadline)} if message.deadline else {}),
    }


def _rfc3339(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def encode(message: messages.Message) -> bytes:
    """Strict JSON: NaN and Infinity, which no reader takes, raise ValueError here."""
    return json.dumps(to_dict(message), separators=(",", ":"), allow_nan=False).encode()


def decode(raw: bytes | None) -> messages.Message:
    """The message in `raw`, with its ids in canonical form; UndecodableMessageError, and
    nothing else, for anything that is not a well-formed envelope."""
    if raw is None:
        raise UndecodableMessageError("the message has no value")
    try:
        return _decode(raw)
    except UndecodableMessageError:
        raise
    except RecursionError:
        raise UndecodableMessageError("the message is nested too deeply") from None
    except Exception as exc:  # whatever else hostile input can make a parser raise
        raise UndecodableMessageError(f"the envelope is malformed: {exc!r}"[:500]) from None


def _decode(raw: bytes) -> messages.Message:
    data = loads(raw)
    if not isinstance(data, dict):
        raise UndecodableMessageError("the message is not a JSON object")
    if b"u0000" in raw and holds_nul(raw.decode("utf-8", "replace")):
        raise UndecodableMessageError("the message holds a NUL character (\\u0000)")
    missing = [field for field in _REQUIRED if field not in data]
    if missing:
        raise UndecodableMessageError(f"the envelope lacks {', '.join(missing)}")
    for field, least, words in (("version", 1, "a positive"), ("attempt", 0, "a non-negative")):
        value = data.get(field, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not least <= value < 2**31:
            raise UndecodableMessageError(f"{field} {value!r} is not {words} integer")
    try:
        message = messages.Message(
            message_id=_uuid("messageId", data["messageId"]),
            message_type=str(data["messageType"]),
            version=data["version"],
            kind=messages.Kind(data["kind"]),
            timestamp=_timestamp("timestamp", data["timestamp"]),
            saga_id=_uuid("sagaId", data["sagaId"]),
            saga_type=str(data.get("sagaType", "")),
            step=str(data.get("step", "")),
            attempt=data.get("attempt", 0),
            causation_id=(
                None
                if data.get("causationId") is None
                else _uuid("causationId", data["causationId"])
            ),
            source=str(data["source"]),
            payload=_object(data.get("payload", {})),
            trace_id=_trace_id(data.get("traceId")),
            deadline=None
            if data.get("deadline") is None
            else _timestamp("deadline", data["deadline"]),
        )
    except (ValueError, TypeError) as exc:
        raise UndecodableMessageError(f"the envelope is malformed: {exc}") from None
    if message.kind is messages.Kind.REPLY:
        _check_reply(message)
    return message


def loads(raw: bytes) -> Any:
    """Strict JSON (orjson: no NaN or Infinity, numbers in range, at most 1024 levels deep),
    or UndecodableMessageError saying what is wrong."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise UndecodableMessageError("the message is nested too deeply") from None
        if "infinity" in str(exc):
            raise UndecodableMessageError("a number of the message is out of range") from None
        raise UndecodableMessageError(f"the message is not JSON: {exc}"[:500]) from None


def _uuid(name: str, value: Any) -> str:
    """The canonical form (lower case, hyphenated) of any spelling Python's UUID reads."""
    if not isinstance(value, str):
        raise UndecodableMessageError(f"{name} {value!r} is not a UUID")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise UndecodableMessageError(f"{name} {value[:100]!r} is not a UUID") from None


def _timestamp(name: str, value: Any) -> datetime:
    if not isinstance(value, str):
        raise UndecodableMessageError(f"{name} {value!r} is not an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UndecodableMessageError(
            f"{name} {value[:100]!r} is not an RFC 3339 timestamp"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


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
    for part in ("data", "error"):
        if not isinstance(message.payload.get(part, {}), dict):
            raise UndecodableMessageError(
                f"reply {message.message_id}: payload.{part} must be an object"
            )


def headers(message: messages.Message) -> list[tuple[str, bytes]]:
    return [
        ("messageType", message.message_type.encode()),
        ("traceparent", traceparent(message).encode()),
    ]


def traceparent(message: messages.Message) -> str:
    """A W3C trace context: the saga's trace (the one its REST request came with, else one
    derived from the saga id) and a span for this message."""
    trace_id = saga_trace_id(message.trace_id, message.saga_id)
    span_id = message.message_id.replace("-", "")[:16].ljust(16, "0")
    return f"00-{trace_id}-{span_id}-01"


def saga_trace_id(trace_id: str, saga_id: str) -> str:
    """The saga's trace: the one it was started in, else one derived from its id."""
    return trace_id or saga_id.replace("-", "")[:32].ljust(32, "0")


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
