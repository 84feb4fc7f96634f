"""In-memory stand-ins for the ports, for testing the use cases without I/O."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Protocol

from orchestrator.ports import DuplicateIdempotencyKeyError, Idempotency, Publication
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

    async def mark_processed(self, message_id: str, saga_id: str) -> bool:
        if message_id in self.processed:
            return False
        self.processed.add(message_id)
        return True

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        return {m for m, s in messages if await self.mark_processed(m, s)}

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

    async def load(self, saga_id: str, *, for_update: bool) -> Saga | None:
        saga = self.sagas.get(saga_id)
        return copy.deepcopy(saga) if saga else None

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        return {i: copy.deepcopy(self.sagas[i]) for i in sorted(set(saga_ids)) if i in self.sagas}

    async def insert(self, saga: Saga, now: datetime, idempotency: Idempotency | None) -> None:
        if idempotency is not None:
            if idempotency.key in self._db.keys:
                raise DuplicateIdempotencyKeyError(idempotency)
            self.keys[idempotency.key] = (saga.id, idempotency.request_hash)
        saga.version = 1
        self.sagas[saga.id] = copy.deepcopy(saga)

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        if key not in self._db.keys:
            return None
        saga_id, request_hash = self._db.keys[key]
        return copy.deepcopy(self._db.sagas[saga_id]), request_hash

    async def update(self, saga: Saga, now: datetime) -> None:
        if self._db.sagas[saga.id].version != saga.version:
            raise ConcurrencyConflictError(f"saga {saga.id} changed")
        saga.version += 1
        self.sagas[saga.id] = copy.deepcopy(saga)

    async def update_many(self, sagas: Sequence[Saga], now: datetime) -> None:
        for saga in sagas:
            await self.update(saga, now)

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        for saga_id, timeline, publications in appended:
            await self.append(saga_id, timeline, publications, now)

    async def append(
        self,
        saga_id: str,
        timeline: Sequence[TimelineEntry],
        publications: Sequence[Publication],
        now: datetime,
    ) -> None:
        self.timeline += [(saga_id, e) for e in timeline]
        self.outbox += publications


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
