"""The outbox relay: publishes committed outbox rows to Kafka in the order they were written."""

from __future__ import annotations

import asyncio
import contextlib

import psycopg
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


_UNPUBLISHED = (
    sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.headers, outbox.c.value)
    .where(outbox.c.published_at.is_(None))
    .order_by(outbox.c.id)
    .limit(sa.bindparam("limit"))
)
_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(published_at=sa.func.now())
)
NOTIFY_CHANNEL = "saga_outbox"  # see migration 0008: every outbox INSERT notifies it


class OutboxRelay:
    """Publishes outbox rows as soon as their transaction commits.

    A committed INSERT into the outbox sends a NOTIFY; the relay LISTENs on a connection of
    its own and relays until the outbox is empty, then waits for the next notification. It
    also looks every `poll_interval_s` whatever it heard, so a notification lost with a
    broken connection delays rows by that much at most.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Relay now: this process just committed outbox rows."""
        self._wake.set()

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen())
        backoff = 0.05
        try:
            while True:
                self._wake.clear()
                try:
                    published = await self.relay_once()
                    backoff = 0.05
                except Exception as exc:  # keep relaying whatever broke
                    log.warning("outbox_relay_failed", error=repr(exc), retry_in_s=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if published < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            listener.cancel()

    async def _listen(self) -> None:
        """Set the wake event on every notification; reconnect when the connection breaks."""
        url = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    backoff = 0.1
                    self._wake.set()  # whatever committed while nobody listened
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error as exc:
                log.warning("outbox_listen_failed", error=repr(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def relay_once(self) -> int:
        """Publish one batch; the rows are marked only after the broker acknowledged them."""
        async with self._engine.begin() as conn:
            locked = await conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(RELAY_LOCK_ID)))
            if not locked:
                return 0
            rows = (await conn.execute(_UNPUBLISHED, {"limit": self._batch_size})).all()
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
            await conn.execute(_MARK_PUBLISHED, {"ids": [r.id for r in rows]})
        metrics.RELAYED.inc(len(rows))
        metrics.RELAY_BATCH_SIZE.observe(len(rows))
        log.debug("outbox_relayed", count=len(rows))
        return len(rows)
