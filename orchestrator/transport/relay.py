"""The outbox relay: publishes committed outbox rows to Kafka in the order they were written."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import metrics
from orchestrator.faults import Fault, classify, describe
from orchestrator.store.tables import outbox, outbox_relay_lease, saga, saga_timeline
from orchestrator.transport.producer import Publisher, Record

log = structlog.get_logger(__name__)

# One relay publishes at a time, so that rows of one key can't be published out of order by
# two relays each holding a part of them. It holds a lease, not a lock: no transaction stays
# open while it waits on the broker, and a relay that froze loses the lease when it expires.
_TAKE_LEASE = (
    outbox_relay_lease.update()
    .where(
        outbox_relay_lease.c.id == 1,
        sa.or_(
            outbox_relay_lease.c.owner == sa.bindparam("owner"),
            outbox_relay_lease.c.expires_at < sa.func.now(),
        ),
    )
    .values(
        owner=sa.bindparam("owner"),
        expires_at=sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam("ttl")),
    )
    .returning(outbox_relay_lease.c.id)
)
_RELEASE_LEASE = (
    outbox_relay_lease.update()
    .where(outbox_relay_lease.c.id == 1, outbox_relay_lease.c.owner == sa.bindparam("owner"))
    .values(expires_at=sa.func.now())
)
# Rows younger than `recover_after_s` are being published by the process that wrote them.
_UNPUBLISHED = (
    sa.select(outbox.c.id, outbox.c.topic, outbox.c.key, outbox.c.headers, outbox.c.value)
    .where(
        outbox.c.published_at.is_(None),
        outbox.c.parked_at.is_(None),
        outbox.c.created_at
        < sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam("older_than")),
    )
    .order_by(outbox.c.id)
    .limit(sa.bindparam("limit"))
)
_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(published_at=sa.func.now())
)
_COUNT_FAILURE = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("row_id"), outbox.c.published_at.is_(None))
    .values(attempts=outbox.c.attempts + 1, last_error=sa.bindparam("error"))
    .returning(outbox.c.attempts)
)
_PARK_ROW = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("row_id"), outbox.c.published_at.is_(None))
    .values(parked_at=sa.func.now())
)
_PARK_SAGA = (
    saga.update()
    .where(saga.c.id == sa.bindparam("saga_id"))
    .values(
        parked_reason=sa.bindparam("reason"),
        parked_at=sa.func.coalesce(saga.c.parked_at, sa.func.now()),
        wake_at=None,
        version=saga.c.version + 1,  # a worker holding the old version must reload
        updated_at=sa.func.now(),
    )
)
_NOTE_PARKED = saga_timeline.insert().values(
    saga_id=sa.bindparam("saga_id"),
    at=sa.func.now(),
    kind="message_parked",
    step=None,
    detail=sa.bindparam("detail"),
    message_id=None,
)


class OutboxRelay:
    """Publishes the outbox rows that the processes which wrote them left unpublished.

    Each process publishes its own rows right after its commit (publish_on_commit.py); the
    relay is the recovery path, for the rows of a process that crashed or lost the broker
    before the broker acknowledged them. Every `poll_interval_s`, or when woken, it publishes
    the rows older than `recover_after_s`, in the order they were written, until none is
    left. At idle it reads one index and writes nothing.

    No row holds up the others: a row the broker refuses for good (larger than it takes, a
    topic it does not know after `max_attempts` rounds, a refused authorization) is parked
    with the reason, its saga marked for an operator, and the rows after it go on.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        lease_s: float = 5.0,
        max_attempts: int = 5,
        recover_after_s: float = 2.0,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._recover_after_s = recover_after_s
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Look now: this process left rows unpublished."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.05
        try:
            while True:
                self._wake.clear()
                try:
                    published, left = await self.relay_once()
                except Exception as exc:  # keep relaying whatever broke
                    log.warning("outbox_relay_failed", error=describe(exc), retry_in_s=backoff)
                    published, left = 0, 1
                if left:  # the broker is away or unsure: give it time
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                backoff = 0.05
                if published < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            with contextlib.suppress(Exception):
                async with self._engine.begin() as conn:  # a restarted worker takes over at once
                    await conn.execute(_RELEASE_LEASE, {"owner": self._owner})

    async def relay_once(self) -> tuple[int, int]:
        """Publish one batch; return how many rows were published and how many are left for
        a later round (a parked row is not left: the rows after it go on at once).

        A row is marked only after the broker acknowledged it. Between reading the batch and
        marking it no transaction is open; a relay that dies there leaves its rows to be
        published again (consumers ignore the repeats).
        """
        async with self._engine.begin() as conn:
            rows = (
                await conn.execute(
                    _UNPUBLISHED,
                    {"limit": self._batch_size, "older_than": self._recover_after_s},
                )
            ).all()
            # the lease only when there is work: an idle relay writes nothing
            if not rows or not await self._lease(conn):
                return 0, 0
        outcomes = await self._publish_holding_the_lease(
            [
                Record(r.topic, r.key, r.value, [(k, v.encode()) for k, v in r.headers.items()])
                for r in rows
            ]
        )
        published = [r.id for r, error in zip(rows, outcomes, strict=True) if error is None]
        failed = [(r, e) for r, e in zip(rows, outcomes, strict=True) if e is not None]
        if published:
            async with self._engine.begin() as conn:
                await conn.execute(_MARK_PUBLISHED, {"ids": published})
        left = 0
        if failed:  # apart: whatever goes wrong here, what was published stays marked
            async with self._engine.begin() as conn:
                for row, error in failed:
                    left += not await self._parked(conn, row, error)
        if published:
            metrics.RELAYED.inc(len(published))
            metrics.RELAY_BATCH_SIZE.observe(len(published))
            log.debug("outbox_relayed", count=len(published))
        return len(published), left

    async def _lease(self, conn: AsyncConnection) -> bool:
        """Take the lease, or renew it: True while this relay holds it."""
        return bool(await conn.scalar(_TAKE_LEASE, {"owner": self._owner, "ttl": self._lease_s}))

    async def _publish_holding_the_lease(
        self, records: list[Record]
    ) -> list[BaseException | None]:
        """Publish, renewing the lease while the broker takes its time (up to its request
        timeout), so that no other relay sends the same rows meanwhile."""
        publishing = asyncio.ensure_future(self._publisher.publish_each(records))
        try:
            while not publishing.done():
                await asyncio.wait({publishing}, timeout=self._lease_s / 3)
                if publishing.done():
                    break
                error: str | None = None
                try:
                    async with self._engine.begin() as conn:
                        held = await self._lease(conn)
                except Exception as exc:
                    held, error = False, describe(exc)
                if not held:  # sent records cannot be called back; consumers drop repeats
                    log.warning("outbox_lease_lost_while_publishing", error=error)
            return publishing.result()
        finally:
            if not publishing.done():
                publishing.cancel()

    async def _parked(self, conn: AsyncConnection, row: Any, error: BaseException) -> bool:
        """Park the row if the broker refused it for good; False when it goes again."""
        fault = classify(error)
        reason = describe(error)
        if fault is Fault.TRANSIENT:  # the broker's fault, not the row's: it goes next round
            log.warning("outbox_row_not_published", row_id=row.id, error=reason)
            return False
        attempts = await conn.scalar(_COUNT_FAILURE, {"row_id": row.id, "error": reason})
        if attempts is None:  # another relay published it meanwhile
            return True
        if fault is Fault.DOUBTFUL and (attempts or 0) < self._max_attempts:
            log.warning("outbox_row_not_published", row_id=row.id, error=reason, attempt=attempts)
            return False
        await conn.execute(_PARK_ROW, {"row_id": row.id})
        metrics.OUTBOX_PARKED.inc()
        log.error("outbox_row_parked", row_id=row.id, topic=row.topic, key=row.key, error=reason)
        saga_id = _saga_id(row.key)
        if saga_id is None:
            return True
        why = f"a message to {row.topic} could not be published: {reason}"
        marked = await conn.execute(_PARK_SAGA, {"saga_id": saga_id, "reason": why})
        if not marked.rowcount:  # no such saga (any more)
            return True
        detail = {"outbox_id": row.id, "topic": row.topic, "reason": reason, "attempts": attempts}
        await conn.execute(_NOTE_PARKED, {"saga_id": saga_id, "detail": detail})
        return True


def _saga_id(key: str) -> str | None:
    """Every key the orchestrator writes is a saga id; a row written by hand may differ."""
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return None
