"""Published outbox rows are deleted once they are older than the retention; the rows not
yet published, and those parked for an operator, stay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store import migrate
from orchestrator.store.outbox import SqlOutbox
from orchestrator.store.tables import outbox
from orchestrator.store.unit_of_work import create_engine
from orchestrator.transport.relay import OutboxRelay
from tests.fakes import CollectingPublisher

RETENTION_S = 0.5


@pytest.fixture
async def engine(empty_database: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 2)
    yield engine
    await engine.dispose()


async def write(engine: AsyncEngine, *values: bytes, parked: bool = False) -> None:
    async with engine.begin() as conn:
        for value in values:
            parked_at = sa.func.now() if parked else None
            row = outbox.insert().values(topic="t", key="k", headers={}, value=value)
            await conn.execute(row.values(parked_at=parked_at))


async def left(engine: AsyncEngine) -> list[tuple[bytes, bool]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(outbox.c.value, outbox.c.published_at.is_not(None)).order_by(outbox.c.id)
        )
        return [(bytes(r[0]), bool(r[1])) for r in rows]


def relay(engine: AsyncEngine, retention_s: float | None) -> OutboxRelay:
    return OutboxRelay(
        SqlOutbox(engine),
        CollectingPublisher(),  # type: ignore[arg-type]
        batch_size=2,
        recover_after_s=0,
        retention_s=retention_s,
    )


async def test_published_rows_older_than_the_retention_are_deleted(engine: AsyncEngine) -> None:
    purger = relay(engine, RETENTION_S)
    await write(engine, b"parked", parked=True)
    await write(engine, b"old-1", b"old-2", b"old-3")
    while (await purger.relay_once())[0]:
        pass
    assert await purger.purge_once() == 0  # just published: kept for the retention

    await asyncio.sleep(RETENTION_S + 0.2)
    await write(engine, b"new")  # not published yet
    purged = [await purger.purge_once() for _ in range(3)]

    assert purged == [2, 1, 0]  # a batch at a time
    assert await left(engine) == [(b"parked", False), (b"new", False)]


async def test_without_a_retention_published_rows_are_kept(engine: AsyncEngine) -> None:
    keeper = relay(engine, None)
    await write(engine, b"one")
    await keeper.relay_once()
    await asyncio.sleep(0.1)

    assert await keeper.purge_once() == 0
    assert await left(engine) == [(b"one", True)]


async def test_a_running_relay_purges_what_it_published(engine: AsyncEngine) -> None:
    running = asyncio.create_task(relay(engine, 0).run())
    try:
        await write(engine, b"a", b"b", b"c")
        for _ in range(200):
            if not await left(engine):
                break
            await asyncio.sleep(0.05)
        assert await left(engine) == []
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
