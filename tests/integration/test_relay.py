"""Relays running side by side publish each outbox row once, and the rows of a key in the
order they were written (rows of different keys committed concurrently may pass each
other: only the order per key is promised)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store import migrate
from orchestrator.store.tables import outbox
from orchestrator.store.unit_of_work import create_engine
from orchestrator.transport.relay import OutboxRelay
from tests.fakes import CollectingPublisher


async def write(engine: AsyncEngine, writer: str, count: int) -> None:
    """Rows of three keys, one transaction after the other: as a saga's transactions are."""
    for i in range(count):
        async with engine.begin() as conn:
            row = {"topic": "t", "key": f"{writer}{i % 3}", "headers": {}, "value": b"%d" % i}
            await conn.execute(outbox.insert(), row)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def test_relays_side_by_side_publish_each_row_once_in_order(empty_database: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 6)
    published = CollectingPublisher()  # one log of what reached "Kafka", from both relays
    relays = [OutboxRelay(engine, published, batch_size=4) for _ in range(2)]  # type: ignore[arg-type]
    running = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.gather(write(engine, "a", 25), write(engine, "b", 25))
        await until(lambda: len(published.records) >= 50, "50 rows published")
        await asyncio.sleep(0.3)  # and nothing more

        async with engine.connect() as conn:
            written = (
                await conn.execute(sa.select(outbox.c.key, outbox.c.value).order_by(outbox.c.id))
            ).all()
            left = await conn.scalar(
                sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
            )
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await engine.dispose()
    assert left == 0
    assert len(published.records) == 50
    for key in {k for k, _ in written}:
        in_order_written = [bytes(v) for k, v in written if k == key]
        assert [r.value for r in published.records if r.key == key] == in_order_written
