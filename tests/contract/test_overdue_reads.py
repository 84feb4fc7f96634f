"""The overdue sagas as operators read them: counted in the stats and listed by the filter,
the same sagas both ways. The read model has no fake, so this runs on PostgreSQL only."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.saga.machine import SagaStatus
from orchestrator.store.queries import SagaFilter, SqlSagaReader
from orchestrator.store.tables import saga
from orchestrator.store.unit_of_work import SqlUnitOfWork
from tests.contract.test_store_contract import waking_at

AFTER_S = 60.0


async def listed(reader: SqlSagaReader, where: SagaFilter, limit: int = 50) -> list[str]:
    """Every page, in order."""
    ids: list[str] = []
    cursor = None
    while True:
        page, cursor = await reader.list_sagas(where, limit, cursor)
        ids += [item["id"] for item in page]
        if cursor is None:
            return ids


async def test_overdue_sagas_are_counted_by_type_and_listed(postgres_engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(postgres_engine).transaction() as store:
        now = await store.now()
        overdue = [
            waking_at(now - timedelta(seconds=AFTER_S + 30)),
            waking_at(now - timedelta(days=2), "retired"),
            waking_at(now - timedelta(seconds=AFTER_S + 1), "retired"),
        ]
        late = waking_at(now - timedelta(seconds=AFTER_S - 10), "retired")  # not yet
        upcoming = waking_at(now + timedelta(seconds=30), "retired")
        parked = waking_at(now - timedelta(days=2), "retired")
        failed = waking_at(now - timedelta(days=2), "retired")
        done = waking_at(now - timedelta(days=2))
        done.status = SagaStatus.COMPLETED
        sagas = [*overdue, late, upcoming, parked, failed, done]
        await store.insert_many([(s, None) for s in sagas], now)
    async with postgres_engine.begin() as conn:  # rows no decision writes: the filter holds
        stale_wake = now - timedelta(days=2)
        await conn.execute(
            sa.update(saga)
            .where(saga.c.id == parked.id)
            .values(parked_reason="waits for an operator", parked_at=now, wake_at=stale_wake)
        )
        await conn.execute(sa.update(saga).where(saga.c.id == failed.id).values(status="failed"))
    reader = SqlSagaReader(postgres_engine, overdue_after_s=AFTER_S)

    stats = await reader.stats()
    overdue_ids = await listed(reader, SagaFilter(overdue=True), limit=1)
    others = await listed(reader, SagaFilter(overdue=False))
    retired = await listed(reader, SagaFilter(saga_type="retired", overdue=True))
    none_failed = await listed(reader, SagaFilter(statuses=("failed",), overdue=True))

    assert stats["overdue"] == {
        "total": 3,
        "by_type": {"order": 1, "retired": 2},
        "after_s": AFTER_S,
    }
    assert sorted(overdue_ids) == sorted(s.id for s in overdue)
    assert sorted(others) == sorted(s.id for s in (late, upcoming, parked, failed, done))
    assert sorted(retired) == sorted(s.id for s in overdue[1:])
    assert none_failed == []


async def test_no_saga_is_overdue_in_an_empty_database(postgres_engine: AsyncEngine) -> None:
    reader = SqlSagaReader(postgres_engine)

    stats = await reader.stats()

    assert stats["overdue"] == {"total": 0, "by_type": {}, "after_s": 60.0}
    assert await listed(reader, SagaFilter(overdue=True)) == []
