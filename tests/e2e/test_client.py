"""The Python client, sync and async, against the running api, worker and participants;
and the event stream it follows, read as a browser or a proxy meets it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.client import (
    AsyncSagaClient,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    SagaClient,
    TransportError,
)
from tests.e2e.orders import DECLINED_CARD, new_sku, order
from tests.e2e.system import OPERATOR_TOKEN, VIEWER_TOKEN, System

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def sagas(system: System) -> Any:
    with SagaClient(system.url, token=OPERATOR_TOKEN) as client:
        yield client


def stream(system: System, saga_id: str, **kw: Any) -> list[dict[str, Any]]:
    """The events of one connection to the stream, read to its end."""
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}", **kw.pop("headers", {})}
    with httpx.stream(
        "GET", f"{system.url}/sagas/{saga_id}/events", headers=headers, timeout=60, **kw
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            events.append({**fields, "data": json.loads(fields["data"])})
    return events


def test_a_started_order_is_waited_for_through_the_stream(system: System, sagas: Any) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    started = sagas.start("order", order(new_sku(system, 10)))

    done = sagas.wait(started.id, timeout=60)

    assert started.created
    assert done.id == started.id
    assert done.status == "completed"
    assert [s.status for s in done.steps] == ["succeeded"] * 3
    assert done.timeline[-1].kind == "saga_completed"
    assert done.created_at >= before
    assert "shipmentId" in done.context


def test_events_give_the_timeline_as_it_happens_and_end(system: System, sagas: Any) -> None:
    saga_id = sagas.start("order", order(new_sku(system, 10), card=DECLINED_CARD)).id

    followed = list(sagas.events(saga_id, timeout=60))

    saga = sagas.get(saga_id)
    assert saga.status == "compensated"
    assert [(e.id, e.kind) for e in followed] == [(e.id, e.kind) for e in saga.timeline]
    assert followed[-1].kind == "saga_compensated"


def test_list_filters_and_pages(system: System, sagas: Any) -> None:
    sku = new_sku(system, 10)
    since = datetime.now(UTC) - timedelta(seconds=1)
    ids = {sagas.start("order", order(sku)).id for _ in range(3)}
    for saga_id in ids:
        sagas.wait(saga_id, timeout=60)

    first = sagas.list(limit=2, saga_type="order", created_after=since, status="completed")
    found = {s.id for s in sagas.list_all(page_size=2, saga_type="order", created_after=since)}
    none = sagas.list(saga_type="order", status=["failed"], created_after=since)

    assert len(first.items) == 2
    assert first.next_cursor is not None
    assert ids <= found
    assert all(s.status == "completed" and s.type == "order" for s in first.items)
    assert none.items == ()
    assert none.next_cursor is None


def test_a_start_sent_again_with_its_key_returns_the_same_saga(system: System, sagas: Any) -> None:
    body = order(new_sku(system, 10))
    key = f"order-{uuid.uuid4()}"

    first = sagas.start("order", body, idempotency_key=key)
    again = sagas.start("order", body, idempotency_key=key)
    generated = sagas.start("order", body)
    retried = sagas.start("order", body, idempotency_key=generated.idempotency_key)

    assert (again.id, again.created) == (first.id, False)
    assert (retried.id, retried.created) == (generated.id, False)
    assert generated.id != first.id
    with pytest.raises(ConflictError) as reused:
        sagas.start("order", {**body, "amount": "1.00"}, idempotency_key=key)
    assert reused.value.code == "idempotency_conflict"


def test_the_apis_refusals_are_raised_with_its_code(system: System, sagas: Any) -> None:
    done = sagas.wait(sagas.start("order", order(new_sku(system, 10))).id, timeout=60)
    unknown = str(uuid.uuid4())

    with pytest.raises(ConflictError) as aborted:
        sagas.abort(done.id, "too late")
    with pytest.raises(ConflictError) as retried:
        sagas.retry(done.id, "nothing to retry")
    with pytest.raises(ConflictError) as skipped:
        sagas.skip(done.id, "no_such_step", "by hand")
    with pytest.raises(NotFoundError) as missing:
        sagas.get(unknown)
    with pytest.raises(NotFoundError) as never_followed:
        list(sagas.events(unknown))
    with pytest.raises(InvalidRequestError) as invalid:
        sagas.start("order", {"orderId": "o-1"})
    with SagaClient(system.url, token=VIEWER_TOKEN) as viewer, pytest.raises(ForbiddenError):
        viewer.abort(done.id, "a viewer may not")

    assert (aborted.value.status, aborted.value.code) == (409, "action_refused")
    assert aborted.value.message == "the saga is already completed"
    assert retried.value.code == skipped.value.code == "action_refused"
    assert (missing.value.status, missing.value.code) == (404, "saga_not_found")
    assert never_followed.value.code == "saga_not_found"
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_input")
    assert invalid.value.details


def test_an_unreachable_api_is_a_transport_error() -> None:
    with SagaClient("http://127.0.0.1:9", retries=1) as client, pytest.raises(TransportError):
        client.stats()


async def test_the_async_client_starts_waits_lists_and_reads_stats(system: System) -> None:
    async with AsyncSagaClient(system.url, token=OPERATOR_TOKEN) as sagas:
        body = order(new_sku(system, 10))
        started = await sagas.start("order", body)
        again = await sagas.start("order", body, idempotency_key=started.idempotency_key)
        done = await sagas.wait(started.id, timeout=60)
        listed = [s.id async for s in sagas.list_all(saga_type="order", status="completed")]
        stats = await sagas.stats()
        with pytest.raises(ConflictError) as refused:
            await sagas.abort(started.id, "too late")

    assert again.id == started.id
    assert done.status == "completed"
    assert started.id in listed
    assert stats.by_type["order"]["completed"] >= 1
    assert refused.value.code == "action_refused"


def test_the_stream_resumes_after_last_event_id_and_ends_with_end(
    system: System, sagas: Any
) -> None:
    saga_id = sagas.wait(sagas.start("order", order(new_sku(system, 10))).id, timeout=60).id
    timeline = sagas.get(saga_id).timeline

    whole = stream(system, saga_id)
    resumed = stream(system, saga_id, headers={"Last-Event-ID": str(timeline[2].id)})
    by_query = stream(system, saga_id, params={"after": str(timeline[-2].id)})

    assert [e["id"] for e in whole[:-1]] == [str(e.id) for e in timeline]
    assert [e["event"] for e in whole[:-1]] == [e.kind for e in timeline]
    assert whole[0]["data"]["kind"] == "saga_started"
    assert whole[-1] == {"event": "end", "data": {"status": "completed"}}
    assert [e["id"] for e in resumed[:-1]] == [str(e.id) for e in timeline[3:]]
    assert [e.get("id") for e in by_query] == [str(timeline[-1].id), None]


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/sagas/{id}/events", {"Last-Event-ID": "not-a-number"}, 422, "invalid_request"),
        ("/sagas/{id}/events?after=-1", {}, 422, "invalid_request"),
        (f"/sagas/{uuid.uuid4()}/events", {}, 404, "saga_not_found"),
        ("/sagas/not-a-uuid/events", {}, 404, "saga_not_found"),
        ("/sagas/{id}/events", {"Authorization": ""}, 401, "unauthenticated"),
    ],
)
def test_the_stream_refuses_bad_input_with_a_json_error(
    system: System, path: str, headers: dict[str, str], status: int, code: str
) -> None:
    saga_id = system.start_saga(order(new_sku(system, 10)), version=1)

    response = system.api.get(path.replace("{id}", saga_id), headers=headers)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_the_readmes_client_examples_run(
    system: System, capsys: pytest.CaptureFixture[str]
) -> None:
    section = README.read_text().split("<!-- client-example -->", 1)[1]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:3]]
    code = "\n".join(blocks)
    code = code.replace("http://127.0.0.1:8000", system.url)
    code = code.replace("<operator token>", OPERATOR_TOKEN)

    exec(compile(code, str(README), "exec"), {})

    printed = capsys.readouterr().out
    assert "completed" in printed
    assert "saga_completed" in printed
    assert "action_refused the saga is already completed" in printed
