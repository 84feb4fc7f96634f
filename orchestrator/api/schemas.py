"""Request and response bodies of the REST api."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pydantic

from orchestrator.example_inputs import EXAMPLE_INPUTS

EXAMPLE_ORDER = EXAMPLE_INPUTS["order"]


class StartSaga(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"type": "order", "input": EXAMPLE_ORDER}]}
    )

    type: str = pydantic.Field(min_length=1, max_length=128, description="the saga type")
    input: dict[str, Any] = pydantic.Field(description="the saga type's input")
    version: int | None = pydantic.Field(
        default=None, ge=1, description="definition version; the newest when omitted"
    )


class StartSagaItem(StartSaga):
    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    idempotency_key: str | None = pydantic.Field(
        default=None,
        alias="idempotencyKey",
        min_length=1,
        max_length=200,
        pattern=r"^[\x20-\x7e]+$",
        description="the same key and item return the same saga (printable ASCII)",
    )


class StartSagaBatch(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    sagas: list[StartSagaItem] = pydantic.Field(min_length=1, max_length=1000)


class SagaStarted(pydantic.BaseModel):
    id: str
    status: str


class Step(pydantic.BaseModel):
    name: str
    status: str
    attempt: int
    compensation_attempt: int
    resolve_attempt: int = pydantic.Field(
        description="times the participant was asked whether the action took effect"
    )
    deadline: datetime | None
    next_attempt_at: datetime | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    updated_at: datetime


class TimelineEntry(pydantic.BaseModel):
    id: int
    at: datetime
    kind: str
    step: str | None
    detail: dict[str, Any]
    message_id: str | None


class SagaSummary(pydantic.BaseModel):
    id: str
    type: str
    definition_version: int
    status: str
    created_at: datetime
    updated_at: datetime
    version: int
    parked_reason: str | None = pydantic.Field(
        default=None, description="why the saga waits for an operator (retry resumes it)"
    )
    parked_at: datetime | None = None


class SagaDetail(SagaSummary):
    input: dict[str, Any]
    context: dict[str, Any]
    steps: list[Step]
    timeline: list[TimelineEntry]
    wake_at: datetime | None


class SagaPage(pydantic.BaseModel):
    items: list[SagaSummary]
    next_cursor: str | None = pydantic.Field(description="pass as `cursor` for the next page")


class TimelinePage(pydantic.BaseModel):
    items: list[TimelineEntry]
    next_after: int | None = pydantic.Field(description="pass as `after` for the next page")


class OldestRunning(pydantic.BaseModel):
    id: str
    created_at: datetime


class Overdue(pydantic.BaseModel):
    total: int
    by_type: dict[str, int]
    after_s: float = pydantic.Field(description="how long past its wake time a saga counts")


class Resolving(pydantic.BaseModel):
    total: int
    by_step: dict[str, int] = pydantic.Field(description="by `<saga type>.<step>`")


class Stats(pydantic.BaseModel):
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    oldest_running: OldestRunning | None
    outbox_backlog: int
    outbox_oldest_unpublished_at: datetime | None
    parked: int = pydantic.Field(description="sagas parked for an operator")
    outbox_parked: int = pydantic.Field(description="outbox rows the broker refused for good")
    overdue: Overdue = pydantic.Field(
        description="active sagas whose timers no running worker has fired in time: none has "
        "their type and version, or none runs (GET /sagas?overdue=true lists them)"
    )
    resolving: Resolving = pydantic.Field(
        description="sagas waiting on a participant to say whether a step whose outcome is "
        "unknown took effect (GET /sagas?resolving=true lists them)"
    )


class OperatorAction(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"reason": "customer cancelled"}]}
    )

    reason: str = pydantic.Field(min_length=1, max_length=1000, description="why, for the record")


class ErrorBody(pydantic.BaseModel):
    code: str
    message: str
    details: list[dict[str, Any]] = []


class ErrorResponse(pydantic.BaseModel):
    error: ErrorBody


class BatchItemResult(pydantic.BaseModel):
    index: int = pydantic.Field(description="the item's position in the request")
    status: int = pydantic.Field(
        description="202 started, 200 started before with this key, else the error's status"
    )
    id: str | None = None
    error: ErrorBody | None = None


class BatchResult(pydantic.BaseModel):
    results: list[BatchItemResult]
