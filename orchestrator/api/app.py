"""The FastAPI application, built from a service, a reader and an authenticator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator import tracing
from orchestrator.api import errors, guards, routes, stream, ui
from orchestrator.api.auth import Authenticator
from orchestrator.service import SagaService
from orchestrator.store.queries import SqlSagaReader


def create_app(
    service: SagaService,
    reader: SqlSagaReader,
    authenticator: Authenticator,
    *,
    max_body_bytes: int = 1_048_576,
    max_batch_body_bytes: int = 16_777_216,
    schema_check: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
    trusted_hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1"),
    metrics_cache_s: float = 15.0,
    metrics_token: str = "",
    stream_pacing: stream.Pacing | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if on_shutdown is not None:
            await on_shutdown()

    app = FastAPI(
        title="Saga orchestrator",
        version="0.1.0",
        description="Start distributed transactions with compensation, follow them, act on them.",
        lifespan=lifespan,
        # Swagger UI and ReDoc load their scripts from a CDN: only the schema is served
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.reader = reader
    app.state.auth = authenticator
    app.state.schema_check = schema_check
    app.state.metrics = routes.CachedStats(reader, metrics_cache_s)
    app.state.metrics_token = metrics_token
    app.state.stream_pacing = stream_pacing or stream.Pacing()
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(stream.router)
    app.include_router(ui.router)

    # the last added runs first: every answer, refusals included, gets the headers
    app.add_middleware(
        BodyLimit, max_bytes=max_body_bytes, larger={"/sagas/batch": max_batch_body_bytes}
    )
    app.add_middleware(guards.TrustedHosts, allowed=trusted_hosts)
    app.add_middleware(guards.SecurityHeaders)
    if tracing.enabled:  # off, requests pay nothing for it
        app.add_middleware(RequestSpans)
    return app


class RequestSpans:
    """A server span for each request but the probes', recorded when its answer is sent.
    While it runs, the routes that start sagas decide its trace and id (`tracing`)."""

    PROBES = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.PROBES:
            await self._app(scope, receive, send)
            return
        started = time.time_ns()
        trace = tracing.begin_request(Headers(scope=scope).get("traceparent"))
        status = 500

        async def answered(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, answered)
        finally:
            # the route's template, not the path: one name for every saga id
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            tracing.end_request(
                trace,
                f"{scope['method']} {route}",
                started,
                time.time_ns(),
                {"http.request.method": scope["method"], "http.route": route,
                 "http.response.status_code": status},
                failed=status >= 500,
            )  # fmt: skip


class BodyLimit:
    """Refuses a request whose body is too large: at once when its Content-Length says so,
    else (a chunked body) as soon as the bytes received pass the limit, before the app has
    read the rest. Plain ASGI: starlette's BaseHTTPMiddleware would cost every request a task
    and a stream."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int]) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._larger = larger  # path -> its own limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        limit = self._larger.get(scope["path"], self._max_bytes)
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await _too_large(limit)(scope, receive, send)
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _too_large(limit)(scope, receive, send)
                    # the app sees a client gone away and stops; its answer is dropped
                    return {"type": "http.disconnect"}
            return message

        async def unless_refused(message: Message) -> None:
            if not refused:
                await send(message)

        await self._app(scope, counted, unless_refused)


def _too_large(limit: int) -> JSONResponse:
    return errors.error_response(
        413, "body_too_large", f"the request body is limited to {limit} bytes"
    )
