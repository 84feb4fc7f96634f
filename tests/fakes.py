"""In-memory stand-ins for the ports, for testing the use cases without I/O."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

from orchestrator.ports import Idempotency, Publication
from orchestrator.saga.errors import ConcurrencyConflictError
from orchestrator.saga.saga import Saga, TimelineEntry
from orchestrator.transport.producer import Record


class Clock(Protocol):
    def now(self) -> datetime: ...


class FakeStore:
    """One transaction's view; its writes reach the shared state only on commit."""

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.sagas = copy.deepcopy(db.sagas)
        self.processed = set(db.processed)
        self.keys: dict[str, tuple[str, str]] = {}
        self.timeline: list[tuple[str, TimelineEntry]] = []
        self.outbox: list[Publication] = []
        self.new: list[tuple[Saga, Idempotency | None]] = []

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        fresh = set()
        for message_id, _ in messages:
            if message_id not in self.processed:
                self.processed.add(message_id)
                fresh.add(message_id)
        return fresh

    async def publish_pending_first(self, saga_ids: Sequence[str]) -> None:
        return None  # every message of the fake is published at its commit

    async def now(self) -> datetime:
        return self._db.clock.now()

    async def claim_due(
        self, limit: int, known: Sequence[tuple[str, int]], orphaned_after_s: float
    ) -> list[str]:
        now = self._db.clock.now()
        due = sorted(
            (s.wake_at, s.id)
            for s in self.sagas.values()
            if s.wake_at
            and s.wake_at <= now
            and (
                (s.type, s.definition_version) in known
                or s.wake_at < now - timedelta(seconds=orphaned_after_s)
            )
        )
        return [saga_id for _, saga_id in due[:limit]]

    async def next_wake(self, known: Sequence[tuple[str, int]]) -> datetime | None:
        times = [
            s.wake_at
            for s in self.sagas.values()
            if s.wake_at and (s.type, s.definition_version) in known
        ]
        return min(times, default=None)

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        return {i: copy.deepcopy(self.sagas[i]) for i in sorted(set(saga_ids)) if i in self.sagas}

    async def insert_many(
        self, new: Sequence[tuple[Saga, Idempotency | None]], now: datetime
    ) -> None:
        for saga, idempotency in new:
            saga.version = 1
            self.new.append((copy.deepcopy(saga), idempotency))

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        found = self.keys.get(key) or self._db.keys.get(key)
        if found is None:
            return None
        saga_id, request_hash = found
        return copy.deepcopy(self.sagas[saga_id]), request_hash

    async def update_many(self, sagas: Sequence[Saga], now: datetime) -> None:
        for saga in sagas:
            if self._db.sagas[saga.id].version != saga.version:
                raise ConcurrencyConflictError(f"saga {saga.id} changed")
            saga.version += 1
            self.sagas[saga.id] = copy.deepcopy(saga)

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        for saga_id, timeline, publications in appended:
            self.timeline += [(saga_id, e) for e in timeline]
            self.outbox += publications

    async def flush(self) -> set[str]:
        """New sagas whose id or key is taken are not stored, nor is anything of theirs."""
        refused = set()
        for saga, idempotency in self.new:
            taken = saga.id in self.sagas or (
                idempotency is not None
                and (idempotency.key in self._db.keys or idempotency.key in self.keys)
            )
            if taken:
                refused.add(saga.id)
                continue
            if idempotency is not None:
                self.keys[idempotency.key] = (saga.id, idempotency.request_hash)
            self.sagas[saga.id] = saga
        self.new = []
        self.timeline = [(i, e) for i, e in self.timeline if i not in refused]
        self.outbox = [p for p in self.outbox if p.message.saga_id not in refused]
        return refused


class FakeDatabase:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sagas: dict[str, Saga] = {}
        self.processed: set[str] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        self.timeline: list[tuple[str, TimelineEntry]] = []
        self.outbox: list[Publication] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeStore]:
        store = FakeStore(self)
        yield store  # an exception here discards the store: a rollback
        await store.flush()
        self.sagas = store.sagas
        self.processed = store.processed
        self.keys.update(store.keys)
        self.timeline += store.timeline
        self.outbox += store.outbox


class CollectingPublisher:
    """Keeps what it is asked to publish, in order, instead of sending it to Kafka."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.records += records

    async def publish_each(self, records: Sequence[Record]) -> list[BaseException | None]:
        await self.publish(records)
        return [None] * len(records)
