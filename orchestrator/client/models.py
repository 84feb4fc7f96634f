"""What the api answers, as frozen dataclasses with parsed times."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.saga import machine

SETTLED = frozenset(s.value for s in machine.SETTLED)

# Each `parse` reads the api's JSON: a missing field raises KeyError, a wrong type TypeError
# or ValueError, which the client reports as an answer the api does not give.


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise TypeError(f"expected a time, got {value!r}")
    return datetime.fromisoformat(value)


def _maybe_time(value: Any) -> datetime | None:
    return None if value is None else _time(value)


def _object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {type(value).__name__}")
    return value


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Started:
    id: str
    status: str
    created: bool  # False: the idempotency key had started this saga before
    idempotency_key: str  # the key sent: start again with it to retry safely


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    name: str
    status: str
    attempt: int
    compensation_attempt: int
    resolve_attempt: int
    deadline: datetime | None
    next_attempt_at: datetime | None
    result: Mapping[str, Any] | None
    error: Mapping[str, Any] | None
    updated_at: datetime

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Step:
        return cls(
            name=str(data["name"]),
            status=str(data["status"]),
            attempt=int(data["attempt"]),
            compensation_attempt=int(data["compensation_attempt"]),
            resolve_attempt=int(data.get("resolve_attempt", 0)),
            deadline=_maybe_time(data["deadline"]),
            next_attempt_at=_maybe_time(data["next_attempt_at"]),
            result=data["result"],
            error=data["error"],
            updated_at=_time(data["updated_at"]),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TimelineEntry:
    id: int  # the entry's position: resume a stream after it
    at: datetime
    kind: str
    step: str | None
    detail: Mapping[str, Any]
    message_id: str | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> TimelineEntry:
        return cls(
            id=int(data["id"]),
            at=_time(data["at"]),
            kind=str(data["kind"]),
            step=data["step"],
            detail=_object(data["detail"]),
            message_id=data["message_id"],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SagaSummary:
    id: str
    type: str
    definition_version: int
    status: str
    created_at: datetime
    updated_at: datetime
    version: int
    parked_reason: str | None = None
    parked_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """Completed, compensated or failed: nothing happens without an operator."""
        return self.status in SETTLED

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> SagaSummary:
        return cls(**_summary_fields(data))


def _summary_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(data["id"]),
        "type": str(data["type"]),
        "definition_version": int(data["definition_version"]),
        "status": str(data["status"]),
        "created_at": _time(data["created_at"]),
        "updated_at": _time(data["updated_at"]),
        "version": int(data["version"]),
        "parked_reason": data.get("parked_reason"),
        "parked_at": _maybe_time(data.get("parked_at")),
    }


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Saga(SagaSummary):
    input: Mapping[str, Any]
    context: Mapping[str, Any]
    steps: tuple[Step, ...]
    timeline: tuple[TimelineEntry, ...]  # the first 1,000 entries; `timeline()` pages them
    wake_at: datetime | None

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Saga:
        return cls(
            **_summary_fields(data),
            input=_object(data["input"]),
            context=_object(data["context"]),
            steps=tuple(Step.parse(s) for s in data["steps"]),
            timeline=tuple(TimelineEntry.parse(e) for e in data["timeline"]),
            wake_at=_maybe_time(data["wake_at"]),
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    items: tuple[SagaSummary, ...]
    next_cursor: str | None  # pass as `cursor` for the next page; None on the last

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Page:
        return cls(
            items=tuple(SagaSummary.parse(s) for s in data["items"]),
            next_cursor=data["next_cursor"],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TimelinePage:
    items: tuple[TimelineEntry, ...]
    next_after: int | None  # pass as `after` for the next page; None on the last

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> TimelinePage:
        return cls(
            items=tuple(TimelineEntry.parse(e) for e in data["items"]),
            next_after=data["next_after"],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class OldestRunning:
    id: str
    created_at: datetime


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Overdue:
    total: int
    by_type: Mapping[str, int]
    after_s: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Resolving:
    total: int
    by_step: Mapping[str, int]  # by `<saga type>.<step>`


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    by_status: Mapping[str, int]
    by_type: Mapping[str, Mapping[str, int]]
    oldest_running: OldestRunning | None
    outbox_backlog: int
    outbox_oldest_unpublished_at: datetime | None
    parked: int
    outbox_parked: int
    overdue: Overdue
    resolving: Resolving

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> Stats:
        oldest, overdue, resolving = data["oldest_running"], data["overdue"], data["resolving"]
        return cls(
            by_status=_object(data["by_status"]),
            by_type=_object(data["by_type"]),
            oldest_running=OldestRunning(
                id=str(oldest["id"]), created_at=_time(oldest["created_at"])
            )
            if oldest
            else None,
            outbox_backlog=int(data["outbox_backlog"]),
            outbox_oldest_unpublished_at=_maybe_time(data["outbox_oldest_unpublished_at"]),
            parked=int(data["parked"]),
            outbox_parked=int(data["outbox_parked"]),
            overdue=Overdue(
                total=int(overdue["total"]),
                by_type=_object(overdue["by_type"]),
                after_s=float(overdue["after_s"]),
            ),
            resolving=Resolving(
                total=int(resolving["total"]), by_step=_object(resolving["by_step"])
            ),
        )
