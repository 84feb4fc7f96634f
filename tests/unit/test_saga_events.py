"""GET /sagas/{id}/events in the assembled app over a scripted reader: the events, resuming,
heartbeats, the end, the bounded lifetime, the refusals, the dashboard's twin."""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from typing import Any, cast

import httpx
import pytest
import uvicorn

from orchestrator.api.app import create_app
from orchestrator.api.auth import Authenticator
from orchestrator.api.stream import Pacing
from orchestrator.client import AsyncSagaClient
from orchestrator.service import SagaService
from orchestrator.settings import Settings
from orchestrator.store.queries import SqlSagaReader

ID = "12345678-1234-5678-1234-567812345678"
OTHER = "87654321-4321-8765-4321-876543218765"
TOKEN = "operator-token-1"


def entry(i: int, kind: str = "command_sent") -> dict[str, Any]:
    at = datetime(2026, 11, 30, 10, 0, i, tzinfo=UTC)
    return {"id": i, "at": at, "kind": kind, "step": "s", "detail": {"n": i}, "message_id": None}


class Reader:
    """The saga's status and timeline as each poll finds them, the last one for good."""

    def __init__(self, *polls: tuple[str, list[dict[str, Any]]]) -> None:
        self.polls = list(polls)
        self.asked: list[int | None] = []

    async def timeline_since(
        self, saga_id: str, after: int | None, limit: int
    ) -> tuple[str, list[dict[str, Any]]] | None:
        if saga_id != ID:
            return None
        self.asked.append(after)
        status, entries = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
        return status, [e for e in entries if after is None or e["id"] > after][:limit]

    async def saga_view(self, saga_id: str) -> dict[str, Any] | None:
        status, entries = self.polls[0]
        at = datetime(2026, 11, 30, tzinfo=UTC)
        return {
            "id": ID, "type": "order", "definition_version": 1, "status": status,
            "created_at": at, "updated_at": at, "version": 1, "parked_reason": None,
            "parked_at": None, "input": {}, "context": {}, "steps": [],
            "timeline": entries, "wake_at": None,
        }  # fmt: skip


def app_with(reader: Reader, **pacing: Any) -> Any:
    settings = Settings(
        database_url="postgresql://u:p@db.example:5432/x",
        kafka_bootstrap_servers="kafka.example:9092",
        operator_tokens=f"ops:{TOKEN}",
        session_secret="a-secret-for-the-tests",
        _env_file=None,
    )
    return create_app(
        cast(SagaService, object()),
        cast(SqlSagaReader, reader),
        Authenticator(settings),
        stream_pacing=Pacing(**{"poll_s": 0.001, **pacing}),
    )


@pytest.fixture(autouse=True)
def _no_saga_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SAGA_"):
            monkeypatch.delenv(name)


async def get(reader: Reader, path: str, token: str | None = TOKEN, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app_with(reader, **kw.pop("pacing", {})))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.get(path, headers={**headers, **kw.pop("headers", {})}, **kw)


def events(body: str) -> list[dict[str, str]]:
    found = []
    for block in body.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if "data" in fields:
            found.append(fields)
    return found


async def test_each_entry_is_an_event_and_a_settled_saga_ends_the_stream() -> None:
    reader = Reader(("completed", [entry(1, "saga_started"), entry(2, "saga_completed")]))

    response = await get(reader, f"/sagas/{ID}/events")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    sent = events(response.text)
    assert [(e.get("id"), e["event"]) for e in sent] == [
        ("1", "saga_started"),
        ("2", "saga_completed"),
        (None, "end"),
    ]
    assert json.loads(sent[0]["data"]) == {
        "id": 1,
        "at": "2026-11-30T10:00:01Z",
        "kind": "saga_started",
        "step": "s",
        "detail": {"n": 1},
        "message_id": None,
    }
    assert json.loads(sent[2]["data"]) == {"status": "completed"}


async def test_a_running_saga_is_polled_after_the_last_entry_sent_with_heartbeats() -> None:
    reader = Reader(
        ("running", [entry(1)]),
        ("running", [entry(1)]),
        ("running", [entry(1)]),
        ("failed", [entry(1), entry(2, "saga_failed")]),
    )

    response = await get(reader, f"/sagas/{ID}/events", pacing={"heartbeat_s": 0})

    assert reader.asked == [None, 1, 1, 1]
    assert [e["event"] for e in events(response.text)] == ["command_sent", "saga_failed", "end"]
    assert ": keep-alive" in response.text


async def test_the_stream_resumes_after_last_event_id_or_after() -> None:
    reader = Reader(("completed", [entry(1), entry(2), entry(3)]))

    by_header = await get(reader, f"/sagas/{ID}/events", headers={"Last-Event-ID": "2"})
    by_query = await get(reader, f"/sagas/{ID}/events?after=1")
    newest = await get(reader, f"/sagas/{ID}/events?after=1", headers={"Last-Event-ID": "2"})

    assert [e.get("id") for e in events(by_header.text)] == ["3", None]
    assert [e.get("id") for e in events(by_query.text)] == ["2", "3", None]
    assert reader.asked == [2, 1, 2]
    assert newest.status_code == 200


async def test_a_stream_ends_after_its_lifetime_without_the_end_event() -> None:
    reader = Reader(("running", [entry(1)]))

    response = await get(reader, f"/sagas/{ID}/events", pacing={"max_s": 0})

    assert [e["event"] for e in events(response.text)] == ["command_sent"]


@pytest.mark.parametrize(
    ("path", "headers", "status", "named"),
    [
        (f"/sagas/{OTHER}/events", {}, 404, "saga_not_found"),
        ("/sagas/not-a-uuid/events", {}, 404, "saga_not_found"),
        (f"/sagas/urn:uuid:{ID}/events", {}, 404, "saga_not_found"),
        (f"/sagas/{ID}/events", {"Last-Event-ID": "x"}, 422, "Last-Event-ID"),
        (f"/sagas/{ID}/events", {"Last-Event-ID": "-1"}, 422, "Last-Event-ID"),
        (f"/sagas/{ID}/events", {"Last-Event-ID": "9" * 30}, 422, "Last-Event-ID"),
        (f"/sagas/{ID}/events?after=99999999999999999999", {}, 422, "after"),
        (f"/sagas/{ID}/events?after=%00", {}, 422, "after"),
    ],
)
async def test_a_bad_request_is_refused_before_the_stream_begins(
    path: str, headers: dict[str, str], status: int, named: str
) -> None:
    response = await get(Reader(("running", [])), path, headers=headers)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert named in response.text


async def test_the_stream_needs_a_token_before_it_says_whether_the_saga_exists() -> None:
    assert (await get(Reader(("running", [])), f"/sagas/{OTHER}/events", None)).status_code == 401


async def test_the_dashboard_twin_needs_a_session_and_names_every_entry_timeline() -> None:
    reader = Reader(("completed", [entry(1, "saga_started")]))

    anonymous = await get(reader, f"/ui/sagas/{ID}/events", None)
    signed_in = await get(reader, f"/ui/sagas/{ID}/events")  # a script's bearer session

    assert anonymous.status_code == 401
    assert [e["event"] for e in events(signed_in.text)] == ["timeline", "end"]


async def test_the_live_script_is_a_file_and_other_pages_run_no_script() -> None:
    script = await get(Reader(("running", [])), "/ui/static/saga-live.js", None)
    login = await get(Reader(("running", [])), "/ui/login", None)

    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "EventSource" in script.text
    assert "script-src" not in login.headers["content-security-policy"]
    assert "<script" not in login.text


async def test_the_openapi_schema_documents_the_stream_and_its_json_refusals() -> None:
    schema = (await get(Reader(("running", [])), "/openapi.json", None)).json()

    answers = schema["paths"]["/sagas/{saga_id}/events"]["get"]["responses"]
    assert "text/event-stream" in answers["200"]["content"]
    assert {"401", "404", "422"} <= answers.keys()
    assert list(answers["404"]["content"]) == ["application/json"]


async def test_the_async_client_waits_for_the_saga_through_the_stream() -> None:
    reader = Reader(("running", []), ("running", [entry(1)]), ("completed", [entry(1)]))
    transport = httpx.ASGITransport(app=app_with(reader))

    async with AsyncSagaClient("http://localhost", token=TOKEN, transport=transport) as sagas:
        seen = [e.id async for e in sagas.events(ID)]

    assert seen == [1]


async def test_the_stream_stops_when_the_client_goes_away() -> None:
    reader = Reader(("running", [entry(1)]))
    server = uvicorn.Server(
        uvicorn.Config(app_with(reader), host="127.0.0.1", port=0, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):  # uvicorn says it started by a flag only
            if server.started:
                break
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/sagas/{ID}/events"
        async with (
            httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as client,
            client.stream("GET", url) as response,
        ):
            async for line in response.aiter_lines():
                if line == "id: 1":
                    break
        await asyncio.sleep(0.2)
        polls = len(reader.asked)
        await asyncio.sleep(0.2)

        assert len(reader.asked) == polls, "the stream polled on after the client left"
    finally:
        server.should_exit = True
        await serving
