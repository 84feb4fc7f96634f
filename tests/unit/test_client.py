"""The Python client against scripted answers (httpx.MockTransport): what it sends, how it
reads answers and refusals, when it retries, and how it follows a saga's event stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from orchestrator.client import (
    AsyncSagaClient,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    SagaClient,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnexpectedResponseError,
    WaitTimeoutError,
    calls,
)

ID = "5b0d7c1e-1234-4abc-8def-0123456789ab"
AT = "2026-11-30T10:00:00.123456Z"
Handler = Callable[[httpx.Request], httpx.Response]


def saga(status: str = "completed", timeline: int = 2) -> dict[str, Any]:
    return {
        "id": ID,
        "type": "order",
        "definition_version": 1,
        "status": status,
        "created_at": AT,
        "updated_at": AT,
        "version": 3,
        "parked_reason": None,
        "parked_at": None,
        "input": {"orderId": "o-1"},
        "context": {"chargeId": "ch-1"},
        "steps": [
            {
                "name": "charge_payment",
                "status": "succeeded",
                "attempt": 1,
                "compensation_attempt": 0,
                "resolve_attempt": 0,
                "deadline": None,
                "next_attempt_at": None,
                "result": {"chargeId": "ch-1"},
                "error": None,
                "updated_at": AT,
            }
        ],
        "timeline": [entry(i) for i in range(1, timeline + 1)],
        "wake_at": None,
    }


def entry(i: int, kind: str = "command_sent") -> dict[str, Any]:
    return {"id": i, "at": AT, "kind": kind, "step": "s", "detail": {"n": i}, "message_id": None}


def refusal(status: int, code: str, message: str) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "details": [{"field": "x"}]}}
    return httpx.Response(status, json=body)


def sse(*entries: dict[str, Any], end: str | None = None) -> bytes:
    text = ": saga\nretry: 1000\n\n"
    for e in entries:
        text += f"id: {e['id']}\nevent: {e['kind']}\ndata: {json.dumps(e)}\n\n"
    if end:
        text += f'event: end\ndata: {{"status": "{end}"}}\n\n'
    return text.encode()


def stream(body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A stream that sends `body`, then loses its connection."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection lost")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.body
        raise httpx.ReadError("connection lost")


class Api:
    """Answers from a script, keyed by (method, path); records every request."""

    def __init__(self, **routes: list[httpx.Response] | Handler) -> None:
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        key = f"{request.method} {request.url.path}"
        route = self.routes[_name(key)]
        if callable(route):
            return route(request)
        return route.pop(0) if len(route) > 1 else route[0]

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]


def _name(key: str) -> str:
    method, path = key.split(" ", 1)
    rest = path.removeprefix("/sagas").replace(ID, "id").strip("/").replace("/", "_")
    return f"{method.lower()}_{rest or 'sagas'}"


def client(api: Api, **options: Any) -> SagaClient:
    return SagaClient(
        "http://api.test", token="t0ken", transport=httpx.MockTransport(api), **options
    )


def aclient(api: Api, **options: Any) -> AsyncSagaClient:
    return AsyncSagaClient(
        "http://api.test", token="t0ken", transport=httpx.MockTransport(api), **options
    )


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("orchestrator.client.sync.time.sleep", lambda s: None)

    async def instantly(s: float) -> None:
        return None

    monkeypatch.setattr("orchestrator.client.aio.asyncio.sleep", instantly)


def test_a_saga_is_read_into_typed_frozen_values() -> None:
    api = Api(get_id=[httpx.Response(200, json=saga())])

    with client(api) as sagas:
        read = sagas.get(ID)

    assert read.status == "completed"
    assert read.settled
    assert read.created_at == datetime(2026, 11, 30, 10, 0, 0, 123456, tzinfo=UTC)
    assert read.steps[0].result == {"chargeId": "ch-1"}
    assert [e.id for e in read.timeline] == [1, 2]
    assert api.requests[0].headers["authorization"] == "Bearer t0ken"
    with pytest.raises(AttributeError):
        read.status = "running"  # type: ignore[misc]


def test_start_sends_a_generated_key_and_sends_it_again_when_the_api_is_busy() -> None:
    busy = refusal(503, "store_unavailable", "the database is unavailable; try again")
    api = Api(post_sagas=[busy, httpx.Response(202, json={"id": ID, "status": "running"})])

    with client(api) as sagas:
        started = sagas.start("order", {"orderId": "o-1"})

    keys = [r.headers["idempotency-key"] for r in api.requests]
    assert len(keys) == 2
    assert keys[0] == keys[1] == started.idempotency_key
    assert (started.id, started.created) == (ID, True)
    assert json.loads(api.requests[0].content) == {"type": "order", "input": {"orderId": "o-1"}}


def test_a_start_answered_200_was_started_before_with_the_key() -> None:
    api = Api(post_sagas=[httpx.Response(200, json={"id": ID, "status": "completed"})])

    with client(api) as sagas:
        started = sagas.start("order", {}, idempotency_key="order-o-1", version=2)

    assert (started.created, started.idempotency_key) == (False, "order-o-1")
    assert json.loads(api.requests[0].content)["version"] == 2


@pytest.mark.parametrize(
    ("answer", "kind", "code"),
    [
        (refusal(404, "saga_not_found", "no saga has id x"), NotFoundError, "saga_not_found"),
        (refusal(409, "invalid_transition", "already completed"), ConflictError, None),
        (refusal(422, "invalid_input", "orderId is missing"), InvalidRequestError, None),
        (refusal(401, "unauthenticated", "no token"), UnauthorizedError, None),
        (httpx.Response(502, text="<html>bad gateway</html>"), ServerError, "http_error"),
    ],
)
def test_a_refusal_is_raised_with_the_apis_code_status_and_message(
    answer: httpx.Response, kind: type[Exception], code: str | None
) -> None:
    api = Api(post_id_abort=[answer])

    with client(api) as sagas, pytest.raises(kind) as raised:
        sagas.abort(ID, "why")

    error = raised.value
    assert error.status == answer.status_code  # type: ignore[attr-defined]
    assert error.code == (code or answer.json()["error"]["code"])  # type: ignore[attr-defined]
    assert len(api.requests) == 1, "an action is never sent twice"


def test_the_api_error_keeps_the_message_and_details() -> None:
    api = Api(get_id=[refusal(404, "saga_not_found", "no saga has id x")])

    with client(api) as sagas, pytest.raises(NotFoundError) as raised:
        sagas.get(ID)

    assert raised.value.message == "no saga has id x"
    assert raised.value.details == ({"field": "x"},)
    assert str(raised.value) == "404 saga_not_found: no saga has id x"


def test_an_unreachable_api_is_a_transport_error_after_the_retries() -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = Api(get_stats=unreachable)

    with client(api, retries=2) as sagas, pytest.raises(TransportError) as raised:
        sagas.stats()

    assert len(api.requests) == 3
    assert "cannot reach the api at http://api.test" in str(raised.value)


def test_an_answer_that_is_not_the_apis_is_unexpected() -> None:
    api = Api(get_id=[httpx.Response(200, text="<html>login</html>")])

    with client(api) as sagas, pytest.raises(UnexpectedResponseError):
        sagas.get(ID)


def test_list_sends_the_filters_the_api_takes_and_list_all_follows_the_cursor() -> None:
    summary = {k: v for k, v in saga().items() if k not in ("input", "context", "steps")}
    pages = [
        httpx.Response(200, json={"items": [summary], "next_cursor": "c2"}),
        httpx.Response(200, json={"items": [summary, summary], "next_cursor": None}),
    ]
    api = Api(get_sagas=pages)

    with client(api) as sagas:
        found = list(
            sagas.list_all(
                page_size=1,
                status=["failed", "running"],
                saga_type="order",
                created_after=datetime(2026, 1, 1, tzinfo=UTC),
                stuck_for=timedelta(minutes=10),
                parked=False,
            )
        )

    assert len(found) == 3
    first, second = (r.url.params for r in api.requests)
    assert first.get_list("status") == ["failed", "running"]
    assert (first["type"], first["stuck_for"], first["parked"]) == ("order", "600s", "false")
    assert first["created_after"] == "2026-01-01T00:00:00+00:00"
    assert "cursor" not in first
    assert second["cursor"] == "c2"


def test_skip_and_fence_name_the_step_and_send_the_reason() -> None:
    api = Api(
        post_id_steps_charge_skip=[httpx.Response(200, json=saga("compensated"))],
        post_id_steps_charge_fence=[httpx.Response(200, json=saga("compensating"))],
    )

    with client(api) as sagas:
        skipped = sagas.skip(ID, "charge", "refunded by hand")
        fenced = sagas.fence(ID, "charge", "gone")

    assert (skipped.status, fenced.status) == ("compensated", "compensating")
    assert json.loads(api.requests[0].content) == {"reason": "refunded by hand"}


def test_stats_are_typed() -> None:
    body = {
        "by_status": {"running": 2},
        "by_type": {"order": {"running": 2}},
        "oldest_running": {"id": ID, "created_at": AT},
        "outbox_backlog": 1,
        "outbox_oldest_unpublished_at": None,
        "parked": 0,
        "outbox_parked": 0,
        "overdue": {"total": 0, "by_type": {}, "after_s": 60},
        "resolving": {"total": 1, "by_step": {"order.charge_payment": 1}},
    }
    api = Api(get_stats=[httpx.Response(200, json=body)])

    with client(api) as sagas:
        stats = sagas.stats()

    assert stats.oldest_running is not None
    assert stats.oldest_running.id == ID
    assert stats.overdue.after_s == 60.0
    assert stats.resolving.by_step == {"order.charge_payment": 1}


def test_wait_follows_the_stream_and_resumes_after_a_dropped_connection() -> None:
    broken = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Broken(sse(entry(3)))
    )
    api = Api(
        get_id=[httpx.Response(200, json=saga("running")), httpx.Response(200, json=saga())],
        get_id_events=[broken, stream(sse(entry(4), end="completed"))],
    )

    with client(api) as sagas:
        done = sagas.wait(ID, timeout=5)

    assert done.status == "completed"
    opened = api.sent("GET", f"/sagas/{ID}/events")
    assert [r.headers.get("last-event-id") for r in opened] == ["2", "3"]


def test_events_poll_when_the_api_has_no_stream() -> None:
    api = Api(
        get_id_events=[refusal(404, "not_found", "Not Found")],
        get_id=[httpx.Response(200, json=saga("running")), httpx.Response(200, json=saga())],
        get_id_timeline=[
            httpx.Response(200, json={"items": [entry(1)], "next_after": None}),
            httpx.Response(200, json={"items": [entry(2, "saga_completed")], "next_after": None}),
        ],
    )

    with client(api, poll_s=0.01) as sagas:
        seen = [(e.id, e.kind) for e in sagas.events(ID)]

    assert seen == [(1, "command_sent"), (2, "saga_completed")]
    assert api.sent("GET", f"/sagas/{ID}/timeline")[1].url.params["after"] == "1"


def test_events_of_an_unknown_saga_raise_not_found() -> None:
    api = Api(get_id_events=[refusal(404, "saga_not_found", "no saga has id x")])

    with client(api) as sagas, pytest.raises(NotFoundError):
        list(sagas.events(ID))


def test_wait_gives_up_at_its_timeout_with_the_last_status() -> None:
    api = Api(
        get_id=[httpx.Response(200, json=saga("running"))],
        get_id_events=[stream(b": saga\n\n")],  # the stream ends at once, again and again
    )

    with client(api) as sagas, pytest.raises(WaitTimeoutError) as raised:
        sagas.wait(ID, timeout=0.05)

    assert raised.value.status == "running"


async def test_the_async_client_waits_through_the_stream_too() -> None:
    api = Api(
        get_id=[httpx.Response(200, json=saga("running", 0)), httpx.Response(200, json=saga())],
        get_id_events=[stream(sse(entry(1), entry(2), end="completed"))],
        post_sagas=[httpx.Response(202, json={"id": ID, "status": "running"})],
    )

    async with aclient(api) as sagas:
        started = await sagas.start("order", {})
        seen = [e.id async for e in sagas.events(started.id)]
        done = await sagas.wait(started.id, timeout=5)

    assert seen == [1, 2]
    assert done.status == "completed"


async def test_the_async_client_raises_the_apis_errors() -> None:
    api = Api(post_id_retry=[refusal(409, "action_refused", "the saga is not failed")])

    async with aclient(api) as sagas:
        with pytest.raises(ConflictError) as raised:
            await sagas.retry(ID, "why")

    assert raised.value.code == "action_refused"


def test_the_sse_parser_reads_the_wire_format() -> None:
    parser = calls.SseParser()
    lines = [": comment", "id: 7", "event: x", "data: a", "data:b", "", "", "data: c", ""]

    events = [e for e in map(parser.feed, lines) if e is not None]

    assert [(e.id, e.event, e.data) for e in events] == [("7", "x", "a\nb"), ("7", "message", "c")]
