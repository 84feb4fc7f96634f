"""The FastAPI application, built from a service, a reader and an authenticator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response

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

    @app.middleware("http")
    async def limit_body(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return errors.error_response(
                413, "body_too_large", f"the request body is limited to {max_body_bytes} bytes"
            )
        return await call_next(request)

    return app
