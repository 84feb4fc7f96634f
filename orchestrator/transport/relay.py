"""The outbox relay: publishes committed outbox rows to Kafka in the order they were written.

Every worker runs one; they share the outbox's shards (OUTBOX_SHARDS, by the rows' keys)
among the relays alive, by rendezvous hashing, and each relays its own."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Collection

import structlog

from orchestrator import metrics
from orchestrator.faults import Fault, classify, describe
from orchestrator.ports import OUTBOX_SHARDS, OutboxMessage, OutboxStore
from orchestrator.transport.producer import Publisher, Record

log = structlog.get_logger(__name__)


def shard_weight(member: str, shard: int) -> int:
    """How much `member` wants `shard`: the same in every process, for ever."""
    digest = hashlib.blake2b(f"{member}:{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def shard_owner(shard: int, members: Collection[str]) -> str:
    """The member that relays `shard`: the one that wants it most (rendezvous hashing). When
    a member leaves, only its shards move; when one joins, it takes only shards it gets."""
    return max(members, key=lambda member: (shard_weight(member, shard), member))


def shards_of(member: str, members: Collection[str], shards: int = OUTBOX_SHARDS) -> list[int]:
    """The shards `member` relays among `members`."""
    return [shard for shard in range(shards) if shard_owner(shard, members) == member]


class OutboxRelay:
    """Publishes the outbox rows that the processes which wrote them left unpublished.

    Each process publishes its own rows right after its commit (publish_on_commit.py); the
    relay is the recovery path, for the rows of a process that crashed or lost the broker
    before the broker acknowledged them. Every `poll_interval_s`, or when woken, it publishes
    the rows older than `recover_after_s`, in the order they were written, until none is
    left. At idle it reads one index and writes nothing but, every third of `lease_s`, that
    it is alive.

    The relays of all the workers share the work: the rows are in shards by their key, and
    each relay publishes the shards that fall to it among the relays seen alive within
    `lease_s`. A relay that stops gives its shards up at once; one that froze loses them
    when it has not been seen for `lease_s`. Each shard has a lease as well, so that two
    relays that disagree for a moment on who is alive never publish the same shard.

    No row holds up the others: a row the broker refuses for good (larger than it takes, a
    topic it does not know after `max_attempts` rounds, a refused authorization) is parked
    with the reason, its saga marked for an operator, and the rows after it go on.
    """

    def __init__(
        self,
        store: OutboxStore,
        publisher: Publisher,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        lease_s: float = 5.0,
        max_attempts: int = 5,
        recover_after_s: float = 2.0,
        retention_s: float | None = None,
        owner: str | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._max_attempts = max_attempts
        self._recover_after_s = recover_after_s
        self._owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = asyncio.Event()
        self._retention_s = retention_s  # None: published rows are kept
        # (when, newest row id then): the ids old enough to purge, without an index on time
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self._joining = asyncio.Lock()
        self._joined_at: float | None = None  # when this relay last noted itself alive
        self._shards: frozenset[int] = frozenset()  # those that fall to it
        self._leased: frozenset[int] = frozenset()  # those it took leases of, since released

    @property
    def owner(self) -> str:
        """The name this relay holds its leases by."""
        return self._owner

    def wake(self) -> None:
        """Look now: this process left rows unpublished."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.05
        staying = asyncio.create_task(self._stay_joined())
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
                purged = await self._purge_quietly()
                if published < self._batch_size and purged < self._batch_size:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
        finally:
            staying.cancel()
            await asyncio.gather(staying, return_exceptions=True)
            with contextlib.suppress(Exception):  # the others take over its shards at once
                await self._store.leave(self._owner)

    async def relay_once(self) -> tuple[int, int]:
        """Publish one batch; return how many rows were published and how many are left for
        a later round (a parked row is not left: the rows after it go on at once).

        A row is marked only after the broker acknowledged it. Between reading the batch and
        marking it no transaction is open; a relay that dies there leaves its rows to be
        published again (consumers ignore the repeats).
        """
        shards = await self._own_shards()
        if self._leased - shards:  # shards now another's: it need not wait out the leases
            await self._store.release(self._owner)
            self._leased = frozenset()
        claimed = await self._store.claim(
            self._owner, sorted(shards), self._lease_s, self._batch_size, self._recover_after_s
        )
        self._leased |= claimed.shards
        rows = claimed.rows
        if not rows:
            return 0, 0
        outcomes = await self._publish_holding_the_leases(
            [Record(r.topic, r.key, r.value, r.headers) for r in rows], claimed.shards
        )
        published = [r.id for r, error in zip(rows, outcomes, strict=True) if error is None]
        failed = [(r, e) for r, e in zip(rows, outcomes, strict=True) if e is not None]
        if published:
            await self._store.mark_published(published)
        left = 0
        for row, error in failed:  # apart: whatever goes wrong here, what was published stays
            left += not await self._parked(row, error)
        if published:
            metrics.RELAYED.inc(len(published))
            metrics.RELAY_BATCH_SIZE.observe(len(published))
            log.debug("outbox_relayed", count=len(published))
        return len(published), left

    async def purge_once(self) -> int:
        """Delete one batch of rows published more than `retention_s` ago; how many."""
        if self._retention_s is None:
            return 0
        now = time.monotonic()
        newest = await self._store.newest_id()
        if newest is not None and (not self._seen or self._seen[-1][1] != newest):
            self._seen.append((now, newest))
        up_to = None
        while self._seen and self._seen[0][0] <= now - self._retention_s:
            up_to = self._seen.popleft()
        if up_to is None:
            return 0
        self._seen.appendleft(up_to)  # rows up to it may be left for the next batch
        purged = await self._store.purge(up_to[1], self._retention_s, self._batch_size)
        if purged:
            log.debug("outbox_purged", count=purged)
        return purged

    async def _purge_quietly(self) -> int:
        try:
            return await self.purge_once()
        except Exception as exc:  # purging is housekeeping: relaying goes on
            log.warning("outbox_purge_failed", error=describe(exc))
            return 0

    async def _own_shards(self) -> frozenset[int]:
        await self._join_if_due()
        return self._shards

    async def _stay_joined(self) -> None:
        """Note this relay alive every third of a lease, however long the rounds take."""
        while True:
            try:
                await self._join_if_due()
            except Exception as exc:  # the others see it alive until the lease runs out
                log.warning("outbox_relay_join_failed", error=describe(exc))
            await asyncio.sleep(self._lease_s / 3)

    async def _join_if_due(self) -> None:
        """Note this relay alive, and learn which shards fall to it, if a third of a lease
        has passed since it last did."""
        async with self._joining:
            now = time.monotonic()
            if self._joined_at is not None and now < self._joined_at + self._lease_s / 3:
                return
            members = await self._store.join(self._owner, self._lease_s)
            self._joined_at = now
            shards = frozenset(shards_of(self._owner, {*members, self._owner}))
            if shards != self._shards:
                log.info("outbox_relay_shards", shards=sorted(shards), relays=len(members))
            self._shards = shards

    async def _publish_holding_the_leases(
        self, records: list[Record], shards: frozenset[int]
    ) -> list[BaseException | None]:
        """Publish, renewing the leases of `shards` while the broker takes its time (up to
        its request timeout), so that no other relay sends the same rows meanwhile."""
        publishing = asyncio.ensure_future(self._publisher.publish_each(records))
        try:
            while not publishing.done():
                await asyncio.wait({publishing}, timeout=self._lease_s / 3)
                if publishing.done():
                    break
                error: str | None = None
                try:
                    held = await self._store.renew(self._owner, sorted(shards), self._lease_s)
                except Exception as exc:
                    held, error = False, describe(exc)
                if not held:  # sent records cannot be called back; consumers drop repeats
                    log.warning("outbox_lease_lost_while_publishing", error=error)
            return publishing.result()
        finally:
            if not publishing.done():
                publishing.cancel()

    async def _parked(self, row: OutboxMessage, error: BaseException) -> bool:
        """Park the row if the broker refused it for good; False when it goes again."""
        fault = classify(error)
        reason = describe(error)
        if fault is Fault.TRANSIENT:  # the broker's fault, not the row's: it goes next round
            log.warning("outbox_row_not_published", row_id=row.id, error=reason)
            return False
        attempts = await self._store.count_failure(row.id, reason)
        if attempts is None:  # another relay published it meanwhile
            return True
        if fault is Fault.DOUBTFUL and attempts < self._max_attempts:
            log.warning("outbox_row_not_published", row_id=row.id, error=reason, attempt=attempts)
            return False
        if await self._store.park(row, reason, attempts):
            metrics.OUTBOX_PARKED.inc()
            log.error(
                "outbox_row_parked", row_id=row.id, topic=row.topic, key=row.key, error=reason
            )
        return True
