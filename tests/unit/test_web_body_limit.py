"""The body limit holds for a chunked body too: 413 as soon as the bytes pass it."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from orchestrator.api.app import BodyLimit

CHUNK = b"x" * 1000


class ReadingApp:
    """Reads the whole body, as a route with a JSON body does, then answers 200."""

    def __init__(self) -> None:
        self.read = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await send({"type": "http.response.start", "status": 400, "headers": []})
                await send({"type": "http.response.body", "body": b"gone"})
                return
            self.read += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(
    limit: int, chunks: int, headers: list[tuple[bytes, bytes]] | None = None, path: str = "/x"
) -> tuple[ReadingApp, list[Message], int]:
    app = ReadingApp()
    sent: list[Message] = []
    pulled = 0

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": CHUNK, "more_body": pulled < chunks}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {"type": "http", "path": path, "headers": headers or []}
    await BodyLimit(app, max_bytes=limit, larger={"/big": 100 * limit})(scope, receive, send)
    return app, sent, pulled


def status_and_body(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
    assert len(statuses) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return statuses[0], json.loads(body)


async def test_a_chunked_body_past_the_limit_is_refused_without_reading_the_rest() -> None:
    app, sent, pulled = await call(limit=5_500, chunks=10_000)

    status, body = status_and_body(sent)
    assert status == 413
    assert body["error"]["code"] == "body_too_large"
    assert pulled == 6  # the chunk that passed the limit was the last one read
    assert app.read == 5_000


async def test_a_chunked_body_within_the_limit_reaches_the_app() -> None:
    app, sent, _ = await call(limit=5_000, chunks=5)

    assert sent[0]["status"] == 200
    assert app.read == 5_000


async def test_a_declared_length_past_the_limit_is_refused_before_any_read() -> None:
    _, sent, pulled = await call(limit=5_000, chunks=6, headers=[(b"content-length", b"6000")])

    assert status_and_body(sent)[0] == 413
    assert pulled == 0


async def test_a_malformed_content_length_is_refused() -> None:
    _, sent, _ = await call(limit=5_000, chunks=1, headers=[(b"content-length", b"-1")])

    assert status_and_body(sent)[0] == 413


async def test_a_path_with_its_own_limit_takes_more() -> None:
    app, sent, _ = await call(limit=1_500, chunks=20, path="/big")

    assert sent[0]["status"] == 200
    assert app.read == 20_000
