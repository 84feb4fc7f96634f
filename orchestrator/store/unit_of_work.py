"""The unit of work: the only place that opens, commits and closes transactions."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from orchestrator.ports import OutboxMessage, PendingMarks
from orchestrator.settings import Settings
from orchestrator.signing import MessageKeys
from orchestrator.store.errors import translated
from orchestrator.store.saga_store import SqlSagaStore


@dataclasses.dataclass(frozen=True, slots=True)
class SessionTimeouts:
    """Limits every session sets, so that a frozen or slow process cannot hold others up:
    a row lock waited for longer than `lock_ms`, a statement running longer than
    `statement_ms`, or a transaction left idle longer than `idle_in_transaction_ms` (its
    locks are then released with its connection) ends with an error that the caller
    retries (see faults.py)."""

    lock_ms: int = 5_000
    statement_ms: int = 30_000
    idle_in_transaction_ms: int = 60_000

    def options(self) -> str:
        return (
            f"-c lock_timeout={self.lock_ms} -c statement_timeout={self.statement_ms} "
            f"-c idle_in_transaction_session_timeout={self.idle_in_transaction_ms}"
        )


def create_engine(
    url: str,
    pool_size: int = 10,
    pre_ping: bool = True,
    timeouts: SessionTimeouts = SessionTimeouts(),  # frozen: safe to share
) -> AsyncEngine:
    """`pre_ping` tests a connection before each use, a round trip per transaction; the
    consumers go without, because they retry a transaction that met a dead connection."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        hide_parameters=True,  # a failed statement's error must not carry saga input into logs
        connect_args={"options": timeouts.options()},
    )


def engine_for(settings: Settings, pool_size: int, pre_ping: bool = True) -> AsyncEngine:
    timeouts = SessionTimeouts(
        settings.db_lock_timeout_ms,
        settings.db_statement_timeout_ms,
        settings.db_idle_in_transaction_timeout_ms,
    )
    return create_engine(settings.database_url, pool_size, pre_ping, timeouts)


OnCommit = Callable[[Sequence[OutboxMessage]], Awaitable[None]]


class SqlUnitOfWork:
    """`on_commit` gets the outbox messages of each committed transaction, in the order they
    were written: the process publishes them at once (the relay recovers what it does not)."""

    def __init__(
        self,
        engine: AsyncEngine,
        on_commit: OnCommit | None = None,
        marks: PendingMarks | None = None,
        keys: MessageKeys | None = None,
    ) -> None:
        """`keys` sign the outbox messages as the orchestrator; without them they go
        unsigned, which participants that require signatures dead-letter."""
        self._engine = engine
        self._on_commit = on_commit
        self._marks = marks
        self._keys = keys

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SqlSagaStore]:
        store: SqlSagaStore | None = None
        try:
            with translated():
                async with self._engine.begin() as conn:
                    store = SqlSagaStore(conn, self._marks, self._keys)
                    yield store
                    await store.flush()
        except BaseException:
            if store is not None and store.marked and self._marks is not None:
                self._marks.give_back(store.marked)
            raise
        if store.outgoing and self._on_commit is not None:
            await self._on_commit(store.outgoing)
