"""The REST routes: start sagas, read them, act on them."""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from orchestrator import codec, durations, metrics, tracing
from orchestrator.api import auth, errors, schemas
from orchestrator.ports import StartRequest
from orchestrator.saga.errors import InvalidQueryError, SagaNotFoundError
from orchestrator.saga.machine import SagaStatus
from orchestrator.service import SagaService
from orchestrator.store.queries import NOT_TERMINAL, SagaFilter, SqlSagaReader

router = APIRouter()

Viewer = Annotated[auth.Principal, Depends(auth.viewer)]
Operator = Annotated[auth.Principal, Depends(auth.operator)]
SagaId = Annotated[str, Path(description="the saga's id (a UUID)")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": text}
    for code, text in {
        401: "no valid bearer token",
        403: "the token's role does not allow this",
        404: "no saga has this id",
        409: "the saga's state does not allow this, or the idempotency key was used before",
        413: "the body, or the saga input, is larger than allowed",
        422: "the request is not valid",
    }.items()
}


def responses_for(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: _ERRORS[code] for code in codes}


class InvalidDurationError(InvalidQueryError):
    """The duration is not valid: use a number and a unit, like 30s, 10m, 2h or 1d."""


async def service(request: Request) -> SagaService:
    # async, like every dependency here: FastAPI runs a plain def in a thread pool
    result: SagaService = request.app.state.service
    return result


async def reader(request: Request) -> SqlSagaReader:
    result: SqlSagaReader = request.app.state.reader
    return result


Sagas = Annotated[SagaService, Depends(service)]
Reader = Annotated[SqlSagaReader, Depends(reader)]


@router.post(
    "/sagas",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=schemas.SagaStarted,
    responses={
        200: {"model": schemas.SagaStarted, "description": "started before with this key"},
        **responses_for(401, 403, 409, 413, 422),
    },
    summary="Start a saga",
)
async def start_saga(
    body: schemas.StartSaga,
    request: Request,
    response: Response,
    sagas: Sagas,
    who: Operator,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            pattern=r"^[\x20-\x7e]+$",
            description="the same key and body return the same saga (printable ASCII)",
        ),
    ] = None,
) -> schemas.SagaStarted:
    trace_id = codec.trace_id_of(request.headers.get("traceparent"))
    if tracing.enabled:  # the saga joins the trace of the request's span
        trace_id = tracing.request_trace_id() or trace_id
    saga, created = await sagas.start_saga(
        body.type, body.input, body.version, scoped(who, idempotency_key), trace_id
    )
    if tracing.enabled and created:
        tracing.started_by_request(saga)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = str(request.url_for("get_saga", saga_id=saga.id))
    return schemas.SagaStarted(id=saga.id, status=saga.status.value)


def scoped(who: auth.Principal, key: str | None) -> str | None:
    """Each caller has its own keys: the same key from another token starts its own saga.
    The separator cannot occur in a key (printable ASCII only)."""
    return None if key is None else f"{who.name}\x1f{key}"


@router.post(
    "/sagas/batch",
    response_model=schemas.BatchResult,
    responses=responses_for(401, 403, 413, 422),
    summary="Start up to 1,000 sagas in one request",
    description="One transaction for the whole batch; each item gets its own result, in "
    "order: a refused item (invalid input, a key used for another request) refuses only "
    "itself. An item with an `idempotencyKey` started before returns that saga with 200.",
)
async def start_sagas(
    body: schemas.StartSagaBatch, request: Request, sagas: Sagas, who: Operator
) -> schemas.BatchResult:
    trace_id = codec.trace_id_of(request.headers.get("traceparent"))
    began = time.time_ns() if tracing.enabled else 0
    if tracing.enabled:
        trace_id = tracing.request_trace_id() or trace_id
    started = await sagas.start_sagas(
        [
            StartRequest(
                item.type, item.input, item.version, scoped(who, item.idempotency_key), trace_id
            )
            for item in body.sagas
        ]
    )
    results = []
    for index, outcome in enumerate(started):
        if isinstance(outcome, Exception):
            code, name, message, details = errors.answer_for(outcome)
            error = schemas.ErrorBody(code=name, message=message, details=details)
            results.append(schemas.BatchItemResult(index=index, status=code, error=error))
        else:
            saga, created = outcome
            results.append(
                schemas.BatchItemResult(index=index, status=202 if created else 200, id=saga.id)
            )
    if tracing.enabled:
        new = [o[0] for o in started if not isinstance(o, Exception) and o[1]]
        tracing.started_in_request(new, began, time.time_ns())
    return schemas.BatchResult(results=results)


@router.get(
    "/sagas",
    response_model=schemas.SagaPage,
    responses=responses_for(401, 422),
    summary="List sagas, newest first, a page at a time",
)
async def list_sagas(
    sagas: Reader,
    _: Viewer,
    status_: Annotated[
        list[SagaStatus] | None, Query(alias="status", description="repeat for several")
    ] = None,
    saga_type: Annotated[
        str | None, Query(alias="type", max_length=128, pattern=r"^[^\x00]*$")
    ] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    updated_before: datetime | None = None,
    stuck_for: Annotated[
        str | None, Query(description="non-final and unchanged for this long: 30s, 10m, 2h")
    ] = None,
    parked: Annotated[
        bool | None, Query(description="true: only sagas parked for an operator; false: none")
    ] = None,
    overdue: Annotated[
        bool | None,
        Query(
            description="true: only active sagas whose timers no running worker has fired "
            "for longer than the stats' `overdue.after_s`; false: none of them"
        ),
    ] = None,
    resolving: Annotated[
        bool | None,
        Query(
            description="true: only sagas waiting on a participant to resolve a step whose "
            "outcome is unknown; false: none of them"
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> schemas.SagaPage:
    statuses = tuple(s.value for s in status_ or ())
    created_after, created_before, updated_before = (
        _aware(t) for t in (created_after, created_before, updated_before)
    )
    if stuck_for is not None:
        try:
            cutoff = datetime.now(UTC) - parse_duration(stuck_for)
        except OverflowError:
            raise InvalidDurationError(f"the duration {stuck_for!r} is too long") from None
        updated_before = min(filter(None, (updated_before, cutoff)))
        statuses = statuses or NOT_TERMINAL
    where = SagaFilter(
        statuses,
        saga_type,
        created_after,
        created_before,
        updated_before,
        parked,
        overdue,
        resolving,
    )
    items, next_cursor = await sagas.list_sagas(where, limit, cursor)
    return schemas.SagaPage.model_validate({"items": items, "next_cursor": next_cursor})


@router.get(
    "/sagas/stats",
    response_model=schemas.Stats,
    responses=responses_for(401),
    summary="Counts by status and type, the oldest running saga, the outbox backlog, the "
    "parked and overdue sagas",
)
async def stats(sagas: Reader, _: Viewer) -> dict[str, Any]:
    return await sagas.stats()


@router.get(
    "/sagas/{saga_id}",
    response_model=schemas.SagaDetail,
    responses=responses_for(401, 404),
    summary="Read a saga with its steps and timeline",
)
async def get_saga(saga_id: SagaId, sagas: Reader, _: Viewer) -> dict[str, Any]:
    view = await sagas.saga_view(saga_id) if is_uuid(saga_id) else None
    if view is None:
        raise SagaNotFoundError(f"no saga has id {saga_id}")
    return view


@router.get(
    "/sagas/{saga_id}/timeline",
    response_model=schemas.TimelinePage,
    responses=responses_for(401, 404),
    summary="Page through a saga's history, oldest first",
)
async def get_timeline(
    saga_id: SagaId,
    sagas: Reader,
    _: Viewer,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the last id of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> schemas.TimelinePage:
    items = await sagas.timeline_page(saga_id, after, limit) if is_uuid(saga_id) else None
    if items is None:
        raise SagaNotFoundError(f"no saga has id {saga_id}")
    next_after = items[-1]["id"] if len(items) == limit else None
    return schemas.TimelinePage.model_validate({"items": items, "next_after": next_after})


async def _act(
    saga_id: str,
    action: str,
    body: schemas.OperatorAction,
    who: auth.Principal,
    sagas: SagaService,
    reads: SqlSagaReader,
    step: str | None = None,
) -> dict[str, Any]:
    if not is_uuid(saga_id):
        raise SagaNotFoundError(f"no saga has id {saga_id}")
    await sagas.operate(saga_id, action, who.name, body.reason, step)
    view = await reads.saga_view(saga_id)
    assert view is not None
    return view


_ACTION_ERRORS = responses_for(401, 403, 404, 409, 422)


@router.post(
    "/sagas/{saga_id}/abort",
    response_model=schemas.SagaDetail,
    responses=_ACTION_ERRORS,
    summary="Compensate now (before the pivot)",
)
async def abort(
    saga_id: SagaId, body: schemas.OperatorAction, who: Operator, sagas: Sagas, reads: Reader
) -> dict[str, Any]:
    return await _act(saga_id, "abort", body, who, sagas, reads)


@router.post(
    "/sagas/{saga_id}/retry",
    response_model=schemas.SagaDetail,
    responses=_ACTION_ERRORS,
    summary="Resume a failed saga",
)
async def retry(
    saga_id: SagaId, body: schemas.OperatorAction, who: Operator, sagas: Sagas, reads: Reader
) -> dict[str, Any]:
    return await _act(saga_id, "retry", body, who, sagas, reads)


@router.post(
    "/sagas/{saga_id}/steps/{step}/skip",
    response_model=schemas.SagaDetail,
    responses=_ACTION_ERRORS,
    summary="Mark a failed saga's stuck compensation as done by hand",
)
async def skip(
    saga_id: SagaId,
    step: str,
    body: schemas.OperatorAction,
    who: Operator,
    sagas: Sagas,
    reads: Reader,
) -> dict[str, Any]:
    return await _act(saga_id, "skip", body, who, sagas, reads, step)


@router.post(
    "/sagas/{saga_id}/steps/{step}/fence",
    response_model=schemas.SagaDetail,
    responses=_ACTION_ERRORS,
    summary="Settle a step waiting on a resolve as never applied (its participant cannot "
    "answer, and the action was made sure of by hand)",
)
async def fence(
    saga_id: SagaId,
    step: str,
    body: schemas.OperatorAction,
    who: Operator,
    sagas: Sagas,
    reads: Reader,
) -> dict[str, Any]:
    return await _act(saga_id, "fence", body, who, sagas, reads, step)


class CachedStats:
    """The database's gauges for /metrics: one stats query per `max_age_s` however often
    Prometheus scrapes, and one at a time (a slow query is not started again meanwhile)."""

    def __init__(self, reader: SqlSagaReader, max_age_s: float) -> None:
        self._reader = reader
        self._max_age_s = max_age_s
        self._stats: dict[str, Any] | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._stats is None or time.monotonic() - self._at >= self._max_age_s:
                self._stats = await self._reader.stats()
                self._at = time.monotonic()
            return self._stats


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses=responses_for(401),
    summary="Prometheus metrics: this process's counters and the database's gauges (cached "
    "for SAGA_METRICS_CACHE_S; a bearer token when SAGA_METRICS_TOKEN is set)",
)
async def prometheus_metrics(request: Request) -> PlainTextResponse:
    expected: str = request.app.state.metrics_token
    if expected:
        given = auth.bearer(request) or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HTTPException(
                401,
                "/metrics needs the SAGA_METRICS_TOKEN bearer token",
                {"WWW-Authenticate": "Bearer"},
            )
    cached: CachedStats = request.app.state.metrics
    body = generate_latest() + metrics.database_gauges(await cached.get(), datetime.now(UTC))
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers and its schema is at the newest revision")
async def readyz(request: Request, sagas: Reader) -> dict[str, str]:
    await sagas.ping()
    check = request.app.state.schema_check
    if check is not None:
        await check()
    return {"status": "ready"}


def parse_duration(text: str) -> timedelta:
    try:
        return durations.parse(text)
    except ValueError as exc:
        raise InvalidDurationError(str(exc)) from None


def _aware(at: datetime | None) -> datetime | None:
    """A time given without a zone is taken as UTC, so that it compares with the others."""
    return at.replace(tzinfo=UTC) if at is not None and at.tzinfo is None else at


_UUID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def is_uuid(value: str) -> bool:
    """The canonical form only: Python also takes `urn:uuid:…` and braces, PostgreSQL not."""
    return _UUID.fullmatch(value) is not None
