"""Two attempts of one saga step handled at the same moment (two participant instances
overlapping in a rebalance) apply the effect once."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime

import sqlalchemy as sa

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.store.unit_of_work import create_engine
from participants.inventory.handlers import PARTICIPANT, restock
from participants.kit.participant import CommandProcessor
from tests.fakes import CollectingPublisher


async def test_concurrent_attempts_of_one_step_reserve_once(migrated_database: str) -> None:
    engine = create_engine(migrated_database, 4)
    publisher = CollectingPublisher()
    processor = CommandProcessor(PARTICIPANT, engine, publisher, "replies")  # type: ignore[arg-type]
    first = messages.command(
        message_type="inventory.reserve",
        saga_id=messages.new_id(),
        saga_type="order",
        step="reserve_inventory",
        attempt=1,
        payload={"orderId": "o-1", "items": [{"sku": "SKU-X", "quantity": 3}]},
        now=datetime.now(UTC),
        causation_id=None,
    )
    second = dataclasses.replace(first, message_id=messages.new_id(), attempt=2)
    try:
        async with engine.begin() as conn:
            await restock(conn, "SKU-X", 10)

        await asyncio.gather(*(processor.process(c) for c in (first, second) * 3))

        async with engine.connect() as conn:
            left = await conn.scalar(
                sa.text("SELECT quantity FROM inventory.stock WHERE sku = 'SKU-X'")
            )
    finally:
        await engine.dispose()
    replies = [codec.decode(r.value) for r in publisher.records]
    assert left == 7
    assert len(replies) == 6
    assert {r.outcome for r in replies} == {messages.Outcome.SUCCESS}
    assert len({tuple(sorted(r.data.items())) for r in replies}) == 1


def reserve(sku: str) -> messages.Message:
    return messages.command(
        message_type="inventory.reserve",
        saga_id=messages.new_id(),
        saga_type="order",
        step="reserve_inventory",
        attempt=1,
        payload={"orderId": sku, "items": [{"sku": sku, "quantity": 1}]},
        now=datetime.now(UTC),
        causation_id=None,
    )


async def test_batches_that_take_shared_rows_in_opposite_orders_wait_instead_of_deadlocking(
    migrated_database: str,
) -> None:
    """Partitions are applied side by side, each batch in one transaction: a batch that
    reserves A then B and one that reserves B then A take the participant's declared locks
    in one order first, so the database never has to break a deadlock."""
    engine = create_engine(migrated_database, 8)
    processor = CommandProcessor(PARTICIPANT, engine, CollectingPublisher(), "replies")  # type: ignore[arg-type]

    async def deadlocks() -> int:
        async with engine.connect() as conn:
            return int(
                await conn.scalar(
                    sa.text(
                        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
                    )
                )
            )

    try:
        async with engine.begin() as conn:
            for sku in ("SKU-A", "SKU-B"):
                await restock(conn, sku, 1000)
        before = await deadlocks()
        orders = [("SKU-A", "SKU-B"), ("SKU-B", "SKU-A")] * 10
        await asyncio.gather(
            *(processor.process_many([reserve(x), reserve(y)]) for x, y in orders)
        )
        await asyncio.sleep(0.6)  # the statistics collector's delay
        after = await deadlocks()

        async with engine.connect() as conn:
            stock = "SELECT sku, quantity FROM inventory.stock WHERE sku IN ('SKU-A', 'SKU-B')"
            left = dict((await conn.execute(sa.text(stock))).all())
    finally:
        await engine.dispose()
    assert left == {"SKU-A": 980, "SKU-B": 980}
    assert after == before
