"""The one envelope for commands, replies and events, and the reply outcomes."""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

ENVELOPE_VERSION = 1
REPLY_SUFFIX = ".reply"


class Kind(enum.StrEnum):
    COMMAND = "command"
    REPLY = "reply"
    EVENT = "event"


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    RETRYABLE = "retryable"


@dataclasses.dataclass(frozen=True, slots=True)
class Message:
    message_id: str
    message_type: str
    kind: Kind
    timestamp: datetime
    saga_id: str
    saga_type: str
    step: str
    attempt: int
    causation_id: str | None
    source: str
    payload: Mapping[str, Any]
    version: int = ENVELOPE_VERSION
    trace_id: str = ""  # W3C trace id (32 hex digits) that follows the saga; "" when unknown
    # A command's: after it the orchestrator no longer waits for it, and a participant must
    # not apply it (a newer attempt or the compensation has taken its place).
    deadline: datetime | None = None

    @property
    def correlation_id(self) -> str:
        return self.saga_id

    @property
    def outcome(self) -> Outcome:
        return Outcome(self.payload["outcome"])

    @property
    def data(self) -> Mapping[str, Any]:
        return self.payload.get("data") or {}

    @property
    def error(self) -> Mapping[str, Any]:
        return self.payload.get("error") or {}

    @property
    def replied_command_type(self) -> str:
        return self.message_type.removesuffix(REPLY_SUFFIX)


def new_id() -> str:
    return str(uuid.uuid4())


def command(
    *,
    message_type: str,
    saga_id: str,
    saga_type: str,
    step: str,
    attempt: int,
    payload: Mapping[str, Any],
    now: datetime,
    causation_id: str | None,
    trace_id: str = "",
    deadline: datetime | None = None,
) -> Message:
    return Message(
        message_id=new_id(),
        message_type=message_type,
        kind=Kind.COMMAND,
        timestamp=now,
        saga_id=saga_id,
        saga_type=saga_type,
        step=step,
        attempt=attempt,
        causation_id=causation_id,
        source="orchestrator",
        payload=dict(payload),
        trace_id=trace_id,
        deadline=deadline,
    )


def reply_to(
    cmd: Message,
    *,
    source: str,
    outcome: Outcome,
    now: datetime,
    data: Mapping[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
) -> Message:
    payload: dict[str, Any] = {"outcome": outcome.value}
    if data:
        payload["data"] = dict(data)
    if outcome is not Outcome.SUCCESS:
        payload["error"] = {"code": error_code or "error", "message": error_message or ""}
    return dataclasses.replace(
        cmd,
        message_id=new_id(),
        message_type=cmd.message_type + REPLY_SUFFIX,
        kind=Kind.REPLY,
        timestamp=now,
        causation_id=cmd.message_id,
        source=source,
        payload=payload,
        version=ENVELOPE_VERSION,
        deadline=None,
    )


def event(
    *,
    message_type: str,
    saga_id: str,
    saga_type: str,
    now: datetime,
    payload: Mapping[str, Any],
    causation_id: str | None,
    trace_id: str = "",
) -> Message:
    return Message(
        message_id=new_id(),
        message_type=message_type,
        kind=Kind.EVENT,
        timestamp=now,
        saga_id=saga_id,
        saga_type=saga_type,
        step="",
        attempt=0,
        causation_id=causation_id,
        source="orchestrator",
        payload=dict(payload),
        trace_id=trace_id,
    )
