"""The outbox on PostgreSQL, for the processes that publish it: marking what the broker
acknowledged."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.tables import outbox

_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.id == sa.func.any(sa.bindparam("ids")), outbox.c.published_at.is_(None))
    .values(published_at=sa.func.now())
)
# A mark lost with a crash costs one more publication of the row (by the relay), which every
# consumer ignores: the mark need not wait for the disk.
_NO_FLUSH_WAIT = sa.text("SET LOCAL synchronous_commit = off")


class OutboxMarks:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def mark_published(self, ids: Sequence[int]) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(_NO_FLUSH_WAIT)
            await conn.execute(_MARK_PUBLISHED, {"ids": list(ids)})
