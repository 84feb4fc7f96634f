"""The FastAPI application, built from a service, a reader and an authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator.api import errors, routes, ui
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
    )
    app.state.service = service
    app.state.reader = reader
    app.state.auth = authenticator
    app.state.schema_check = schema_check
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(ui.router)

    app.add_middleware(
        BodyLimit, max_bytes=max_body_bytes, larger={"/sagas/batch": max_batch_body_bytes}
    )
    return app


class BodyLimit:
    """Refuses a request whose declared body is too large before reading it (plain ASGI:
    starlette's BaseHTTPMiddleware would cost every request a task and a stream)."""

    def __init__(self, app: ASGIApp, max_bytes: int, larger: dict[str, int]) -> None:
        self._app = app
        self._max_bytes = max_bytes
        self._larger = larger  # path -> its own limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            limit = self._larger.get(scope["path"], self._max_bytes)
            length = Headers(scope=scope).get("content-length")
            if length is not None and (not length.isdigit() or int(length) > limit):
                response = errors.error_response(
                    413, "body_too_large", f"the request body is limited to {limit} bytes"
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)
