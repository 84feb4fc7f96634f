"""A handler that raises answers `retryable` with the reason, undoing what it wrote; a
compensation past its deadline is not applied."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.store.unit_of_work import create_engine
from participants.inventory.handlers import PARTICIPANT, restock
from participants.kit.participant import CommandProcessor, Result
from tests.fakes import CollectingPublisher


def reserve(quantity: int, deadline: datetime | None = None) -> messages.Message:
    return messages.command(
        message_type="inventory.reserve",
        saga_id=messages.new_id(),
        saga_type="order",
        step="reserve_inventory",
        attempt=1,
        payload={"orderId": "o-1", "items": [{"sku": "SKU-F", "quantity": quantity}]},
        now=datetime.now(UTC),
        causation_id=None,
        deadline=deadline,
    )


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database, 2)
    async with engine.begin() as conn:
        await restock(conn, "SKU-F", 10)
    yield engine
    await engine.dispose()


async def stock(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        left: int = await conn.scalar(
            sa.text("SELECT quantity FROM inventory.stock WHERE sku = 'SKU-F'")
        )
    return left


async def test_a_handler_that_raises_replies_retryable_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    real = PARTICIPANT.actions["inventory.reserve"]

    async def reserve_then_fail(conn: AsyncConnection, command: messages.Message) -> Result:
        await real(conn, command)  # writes the reservation, then the handler breaks
        raise ZeroDivisionError("a bug after the write")

    broken = dataclasses.replace(PARTICIPANT, actions={"inventory.reserve": reserve_then_fail})
    publisher = CollectingPublisher()
    processor = CommandProcessor(broken, engine, publisher, "replies")  # type: ignore[arg-type]

    await processor.process(reserve(3))

    [reply] = [codec.decode(r.value) for r in publisher.records]
    assert reply.outcome is messages.Outcome.RETRYABLE
    assert reply.error["code"] == "handler_failed"
    assert "ZeroDivisionError: a bug after the write" in reply.error["message"]
    assert await stock(engine) == 10


async def test_a_compensation_past_its_deadline_is_not_applied_a_late_action_is(
    engine: AsyncEngine,
) -> None:
    publisher = CollectingPublisher()
    processor = CommandProcessor(PARTICIPANT, engine, publisher, "replies")  # type: ignore[arg-type]
    past, future = datetime.now(UTC) - timedelta(seconds=1), datetime.now(UTC) + timedelta(30)
    late_action = reserve(3, deadline=past)
    release = dataclasses.replace(
        late_action, message_type="inventory.release", payload={}, deadline=past
    )

    await processor.process(late_action)
    await processor.process(dataclasses.replace(release, message_id=messages.new_id()))
    after_expired = await stock(engine)
    await processor.process(
        dataclasses.replace(release, message_id=messages.new_id(), attempt=2, deadline=future)
    )

    replies = [codec.decode(r.value) for r in publisher.records]
    assert [r.outcome for r in replies] == [
        messages.Outcome.SUCCESS,
        messages.Outcome.RETRYABLE,
        messages.Outcome.SUCCESS,
    ]
    assert replies[1].error["code"] == "expired"
    assert after_expired == 7
    assert await stock(engine) == 10
