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
