"""The unit of work: the only place that opens, commits and closes transactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orchestrator.store.saga_store import SqlSagaStore


def create_engine(url: str, pool_size: int = 10, pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping` tests a connection before each use, a round trip per transaction; the
    consumers go without, because they retry a transaction that met a dead connection."""
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=pre_ping
    )


class SqlUnitOfWork:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSagaStore]:
        async with self._engine.begin() as conn:
            store = SqlSagaStore(conn)
            yield store
            await store.flush()
