"""What the sync and the async client share, without I/O: the requests each method makes,
reading the answers, when to retry, and following a saga's event stream."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypedDict, TypeVar

import httpx

from orchestrator.client import errors, models

T = TypeVar("T")
DEFAULT_URL = "http://127.0.0.1:8000"
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
# the server sends a comment every 10 s when nothing happens: a silence this long is a
# connection that broke without a word
STREAM_SILENCE_S = 35.0


class ListFilters(TypedDict, total=False):
    """The filters of `list` and `list_all`, as GET /sagas takes them."""

    status: str | Sequence[str]
    saga_type: str
    created_after: datetime
    created_before: datetime
    updated_before: datetime
    stuck_for: str | timedelta  # non-final and unchanged for this long
    parked: bool
    overdue: bool
    resolving: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request and how to read its answer. `safe`: sending it twice does what sending
    it once does (a read; a start with its idempotency key), so a failure may be retried."""

    method: str
    path: str
    read: Callable[[httpx.Response, Any], T]
    params: Sequence[tuple[str, str]] = ()
    body: Any = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    safe: bool = False


def saga_path(saga_id: str, *rest: str) -> str:
    parts = (saga_id, *rest)
    return "/sagas/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _parsed(parse: Callable[[Mapping[str, Any]], T]) -> Callable[[httpx.Response, Any], T]:
    return lambda response, body: parse(body)


def start(
    saga_type: str, saga_input: Mapping[str, Any], key: str | None, version: int | None
) -> Call[models.Started]:
    key = key or str(uuid.uuid4())

    def read(response: httpx.Response, body: Any) -> models.Started:
        return models.Started(
            id=str(body["id"]),
            status=str(body["status"]),
            created=response.status_code == 202,
            idempotency_key=key,
        )

    body: dict[str, Any] = {"type": saga_type, "input": dict(saga_input)}
    if version is not None:
        body["version"] = version
    return Call("POST", "/sagas", read, body=body, headers={"Idempotency-Key": key}, safe=True)


def get(saga_id: str) -> Call[models.Saga]:
    return Call("GET", saga_path(saga_id), _parsed(models.Saga.parse), safe=True)


def listing(limit: int, cursor: str | None, filters: ListFilters) -> Call[models.Page]:
    status = filters.get("status", ())
    params = [("status", s) for s in ((status,) if isinstance(status, str) else status)]
    for name, value in filters.items():
        if name == "status":
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, timedelta):
            value = f"{int(value.total_seconds())}s"
        params.append(("type" if name == "saga_type" else name, str(value)))
    params.append(("limit", str(limit)))
    if cursor:
        params.append(("cursor", cursor))
    return Call("GET", "/sagas", _parsed(models.Page.parse), params=params, safe=True)


def timeline(saga_id: str, after: int | None, limit: int) -> Call[models.TimelinePage]:
    params = [("limit", str(limit))] + ([("after", str(after))] if after is not None else [])
    path = saga_path(saga_id, "timeline")
    return Call("GET", path, _parsed(models.TimelinePage.parse), params=params, safe=True)


def action(saga_id: str, name: str, reason: str, step: str | None = None) -> Call[models.Saga]:
    path = saga_path(saga_id, name) if step is None else saga_path(saga_id, "steps", step, name)
    return Call("POST", path, _parsed(models.Saga.parse), body={"reason": reason})


def stats() -> Call[models.Stats]:
    return Call("GET", "/sagas/stats", _parsed(models.Stats.parse), safe=True)


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the api's refusal as an exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        raise errors.api_error(response.status_code, body, response.text)
    if body is None:
        raise errors.UnexpectedResponseError(response.status_code, "not JSON")
    try:
        return call.read(response, body)
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.UnexpectedResponseError(response.status_code, repr(exc)) from None


def retry_delay(
    call: Call[Any], attempt: int, retries: int, answer: httpx.Response | None
) -> float | None:
    """How long to wait before sending `call` again after its `attempt`-th failure (None:
    do not): a transport error or a busy answer, for a safe call, `retries` times."""
    if not call.safe or attempt >= retries:
        return None
    if answer is not None and answer.status_code not in RETRYABLE_STATUSES:
        return None
    delay = min(2.0, 0.2 * 2.0**attempt)
    after: str = answer.headers.get("retry-after", "") if answer is not None else ""
    return max(delay, min(float(after), 10.0)) if after.isdigit() else delay


@dataclasses.dataclass(slots=True)
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


class SseParser:
    """The text/event-stream format, a line at a time (the WHATWG rules, less `retry`)."""

    def __init__(self) -> None:
        self._event: str | None = None
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """The event that `line` completes, if it is the blank line that ends one."""
        if not line:
            if not self._data:
                self._event = None
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = None, []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


class Follower:
    """Where a client following a saga is: the last entry seen, whether the saga ended, and
    whether to stream or (the stream being unavailable) to poll."""

    MAX_FAILURES = 3  # stream attempts failing in a row before polling instead

    def __init__(self, saga_id: str, after: int | None, timeout_s: float | None) -> None:
        self.saga_id = saga_id
        self.last = after
        self.timeout_s = timeout_s
        self.deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.ended = False
        self.polling = False
        self.failures = 0

    def stream_call(self) -> tuple[str, dict[str, str]]:
        headers = {"Accept": "text/event-stream"}
        if self.last is not None:
            headers["Last-Event-ID"] = str(self.last)
        return saga_path(self.saga_id, "events"), headers

    def read_timeout(self) -> float:
        """A read gives up at the deadline, or when the stream has been silent too long."""
        return max(0.1, min(self.remaining(), STREAM_SILENCE_S))

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            assert self.timeout_s is not None
            raise errors.WaitTimeoutError(self.saga_id, self.timeout_s)

    def is_stream(self, response: httpx.Response) -> bool:
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        return response.status_code == 200 and streaming

    def refused(self, response: httpx.Response) -> None:
        """The stream was not opened (the response's body read): raise the api's refusal,
        or note the failure, polling once the stream proves unavailable."""
        refusal = answer_error(response)
        if refusal is not None:
            raise refusal
        self.failed()
        if response.status_code in (200, 404, 405, 406, 501):
            self.polling = True  # an api without the stream, or a proxy that hides it

    def closed(self, lines: int, broken: bool = False) -> None:
        """The stream ended without `end`: after its time (reconnect at once), broken
        (reconnect soon), or before it said anything (something between us and the api
        ends it: a failure, and polling after a few)."""
        if self.ended:
            return
        if lines:
            self.failures = 1 if broken else 0
        else:
            self.failed()

    def failed(self) -> None:
        self.failures += 1
        self.polling = self.polling or self.failures >= self.MAX_FAILURES

    def pause(self) -> float:
        """Before the next connection: none after a stream that ran its time, more after
        each failure; polling paces itself."""
        if self.polling or not self.failures:
            return 0.0
        return min(2.0, 0.2 * 2.0 ** (self.failures - 1))

    def take(self, event: SseEvent) -> models.TimelineEntry | None:
        if event.event == "end":
            self.ended = True
            return None
        try:
            entry = models.TimelineEntry.parse(json.loads(event.data))
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.UnexpectedResponseError(200, f"an event: {exc!r}") from None
        return self.seen(entry)

    def seen(self, entry: models.TimelineEntry) -> models.TimelineEntry | None:
        if self.last is not None and entry.id <= self.last:
            return None
        self.last = entry.id
        return entry


def answer_error(response: httpx.Response) -> errors.ApiError | None:
    """The refusal to raise at once when a stream is refused: the saga is unknown, or the
    request or its token is not good (retrying changes nothing)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    error = errors.api_error(response.status_code, body, response.text)
    if response.status_code == 404 and error.code != "saga_not_found":
        return None
    return error if response.status_code in (400, 401, 403, 404, 422) else None
