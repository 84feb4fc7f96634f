"""The FastAPI application, built from a service and a reader."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orchestrator.api import errors, routes
from orchestrator.ports import SagaReader
from orchestrator.service import SagaService


def create_app(
    service: SagaService,
    reader: SagaReader,
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
        description="Start distributed transactions with compensation and read their state.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.reader = reader
    errors.install(app)
    app.include_router(routes.router)
    return app
