"""GET /sagas/{id}/events: a saga's timeline as server-sent events, until the saga settles.

Each timeline entry is one event: `id` its position (the entry's id), `event` its kind,
`data` the entry as GET /sagas/{id}/timeline gives it. A settled saga ends the stream with
`event: end`; a client resumes after the last id it saw (Last-Event-ID, or `?after=`).
The stream polls the database for the rows after the last one sent: the api never talks
to Kafka, and a saga's rows are written by the one transaction that holds the saga, so
they become visible in the order of their ids.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy import exc as sa_exc

from orchestrator.api import schemas
from orchestrator.api.routes import Reader, SagaId, Viewer, is_uuid, responses_for
from orchestrator.saga.errors import SagaNotFoundError
from orchestrator.saga.machine import SETTLED
from orchestrator.store.queries import SqlSagaReader

log = structlog.get_logger(__name__)
router = APIRouter()

_SETTLED = frozenset(s.value for s in SETTLED)
_MAX_POSITION = 2**63 - 1


@dataclasses.dataclass(frozen=True, slots=True)
class Pacing:
    poll_s: float = 0.5
    # below FastAPI's own 15 s keep-alive, so that the comments sent are ours
    heartbeat_s: float = 10.0
    # a stream ends after this long; the client reconnects where it was
    max_s: float = 300.0
    batch: int = 200
    retry_ms: int = 1000  # how long an EventSource waits before it reconnects


@dataclasses.dataclass(frozen=True, slots=True)
class Follow:
    """A request to follow a saga, checked before the stream begins: an unknown saga or a
    malformed position gets its error answer, not an empty stream."""

    saga_id: str
    after: int | None
    status: str
    first: list[dict[str, Any]]  # the entries read while checking that the saga exists


def pacing(request: Request) -> Pacing:
    result: Pacing = request.app.state.stream_pacing
    return result


async def follow(
    request: Request,
    saga_id: SagaId,
    reads: Reader,
    after: Annotated[
        int | None,
        Query(ge=0, le=_MAX_POSITION, description="the last event id seen, for a client "
              "that cannot send Last-Event-ID"),
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=_MAX_POSITION,
               description="the last event id seen: the stream resumes after it"),
    ] = None,
) -> Follow:  # fmt: skip
    # an EventSource opened with ?after= sends the newer Last-Event-ID when it reconnects
    position = max((p for p in (after, last_event_id) if p is not None), default=None)
    found = None
    if is_uuid(saga_id):
        found = await reads.timeline_since(saga_id, position, pacing(request).batch)
    if found is None:
        raise SagaNotFoundError(f"no saga has id {saga_id}")
    return Follow(saga_id, position, *found)


Followed = Annotated[Follow, Depends(follow)]


def by_kind(entry: dict[str, Any]) -> str:
    return str(entry["kind"])


async def events(
    reads: SqlSagaReader, followed: Follow, pace: Pacing, name: Callable[[dict[str, Any]], str]
) -> AsyncIterator[ServerSentEvent]:
    """The followed saga's entries as events, then `end` once it is settled; a comment
    when nothing happened for `heartbeat_s`, so that proxies keep the connection open."""
    yield ServerSentEvent(comment=f"saga {followed.saga_id}", retry=pace.retry_ms)
    began = quiet_since = time.monotonic()
    status, entries, last = followed.status, followed.first, followed.after
    while True:
        for entry in entries:
            data = schemas.TimelineEntry.model_validate(entry).model_dump_json()
            yield ServerSentEvent(id=str(entry["id"]), event=name(entry), raw_data=data)
        if entries:
            last, quiet_since = entries[-1]["id"], time.monotonic()
        full = len(entries) == pace.batch
        if status in _SETTLED and not full:
            yield ServerSentEvent(event="end", data={"status": status})
            return
        if time.monotonic() - began >= pace.max_s:
            return  # bounded: the client reconnects with the last id
        if not full:
            await asyncio.sleep(pace.poll_s)
        if time.monotonic() - quiet_since >= pace.heartbeat_s:
            yield ServerSentEvent(comment="keep-alive")
            quiet_since = time.monotonic()
        try:
            found = await reads.timeline_since(followed.saga_id, last, pace.batch)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, OSError) as exc:
            # the client reconnects after `retry_ms` and resumes where it was
            log.warning("saga_stream_interrupted", saga_id=followed.saga_id, error=repr(exc))
            return
        if found is None:  # archived meanwhile: a reconnect gets the 404
            return
        status, entries = found


_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
_EXAMPLE = (
    ": saga 5b0d...\nretry: 1000\n\n"
    'id: 17\nevent: saga_started\ndata: {"id": 17, "at": "...", "kind": "saga_started", '
    '"step": null, "detail": {"version": 1}, "message_id": null}\n\n'
    'id: 18\nevent: command_sent\ndata: {"id": 18, ...}\n\n'
    ": keep-alive\n\n"
    'event: end\ndata: {"status": "completed"}\n\n'
)


@router.get(
    "/sagas/{saga_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "Server-sent events: one per timeline entry (`id` the entry's "
            "id, `event` its kind, `data` the entry as the timeline gives it), comments as "
            "heartbeats, and `event: end` with the saga's status once it is completed, "
            "compensated or failed. A stream also ends after a few minutes without `end`: "
            "reconnect with `Last-Event-ID` to resume.",
            "content": {"text/event-stream": {"schema": {"type": "string"}, "example": _EXAMPLE}},
        },
        # the refusals are JSON, not the route's event stream
        **{
            code: {
                "description": answer["description"],
                "content": {"application/json": {"schema": _ERROR_SCHEMA}},
            }
            for code, answer in responses_for(401, 404, 422).items()
        },
    },
    summary="Follow a saga's timeline live, as server-sent events, until it settles",
)
async def saga_events(
    _: Viewer, followed: Followed, reads: Reader, request: Request
) -> AsyncIterator[ServerSentEvent]:
    async for event in events(reads, followed, pacing(request), by_kind):
        yield event
