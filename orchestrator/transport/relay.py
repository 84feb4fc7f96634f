"""The outbox relay: publishes committed outbox rows to Kafka in the order they were written."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator import metrics
from orchestrator.store.tables import outbox
from orchestrator.transport.producer import Publisher, Record

log = structlog.get_logger(__name__)

# One relay publishes at a time, so that rows of one key can't be published out of order by
# two relays each holding a part of them.
RELAY_LOCK_ID = 0x5A6A_0001


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        batch_size: int = 500,
        idle_interval_s: float = 0.05,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_interval_s = idle_interval_s

    async def run(self) -> None:
        backoff = self._idle_interval_s
        while True:
            try:
                published = await self.relay_once()
                backoff = self._idle_interval_s
            except Exception as exc:  # keep relaying whatever broke
                log.warning("outbox_relay_failed", error=repr(exc), retry_in_s=backoff)
                published = 0
                backoff = min(backoff * 2, 5.0)
            if published < self._batch_size:
                await asyncio.sleep(backoff)

    async def relay_once(self) -> int:
        """Publish one batch; the rows are marked only after the broker acknowledged them."""
        async with self._engine.begin() as conn:
            locked = await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(RELAY_LOCK_ID)))
            if not locked:
                return 0
            rows = (
                await conn.execute(
                    sa.select(
                        outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.headers, outbox.c.value
                    )
                    .where(outbox.c.published_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(self._batch_size)
                )
            ).all()
            if not rows:
                return 0
            await self._publisher.publish(
                [
                    Record(
                        r.topic, r.key, r.value, [(k, v.encode()) for k, v in r.headers.items()]
                    )
                    for r in rows
                ]
            )
            await conn.execute(
                outbox.update()
                .where(outbox.c.id.in_([r.id for r in rows]))
                .values(published_at=sa.func.now())
            )
        metrics.RELAYED.inc(len(rows))
        log.debug("outbox_relayed", count=len(rows))
        return len(rows)
