"""In-memory stand-ins for the ports, for testing the use cases without I/O.

FakeStore behaves as the PostgreSQL store does (tests/contract runs one suite against both):
reads see what other transactions committed and this one flushed, writes are collected and
written by `flush`, and it raises what the real store raises, where it does."""

from __future__ import annotations

import copy
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Protocol

import psycopg

from orchestrator.ports import Idempotency, Publication
from orchestrator.saga.errors import ConcurrencyConflictError
from orchestrator.saga.saga import Saga, TimelineEntry
from orchestrator.transport.producer import Record


class Clock(Protocol):
    def now(self) -> datetime: ...


class SettableClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, at: datetime = datetime(2026, 1, 1, tzinfo=UTC)) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def canonical(an_id: str) -> str:
    """An id as PostgreSQL gives it back: a UUID in its canonical text form."""
    try:
        return str(uuid.UUID(an_id))
    except ValueError:
        return an_id


class FakeStore:
    """One transaction: it reads what other transactions committed (PostgreSQL's read
    committed) and what it flushed itself; its writes reach the shared state on commit."""

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        # what this transaction wrote (flushed), on top of what the database holds
        self.sagas: dict[str, Saga] = {}
        self.processed: set[str] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        self.timeline: list[tuple[str, TimelineEntry]] = []
        self.outbox: list[Publication] = []
        # what `flush` writes
        self.new: list[tuple[Saga, Idempotency | None]] = []
        self.updated: list[tuple[Saga, int]] = []  # each saga as it will be, the version read
        self.appended_timeline: list[tuple[str, TimelineEntry]] = []
        self.appended_outbox: list[Publication] = []

    def _saga(self, saga_id: str) -> Saga | None:
        return self.sagas.get(saga_id) or self._db.sagas.get(saga_id)

    def _visible(self) -> list[Saga]:
        return list({**self._db.sagas, **self.sagas}.values())

    def _key(self, key: str) -> tuple[str, str] | None:
        return self.keys.get(key) or self._db.keys.get(key)

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        fresh = set()
        for message_id, _ in messages:
            message_id = canonical(message_id)
            if message_id not in self.processed and message_id not in self._db.processed:
                self.processed.add(message_id)
                fresh.add(message_id)
        return fresh

    async def forget_processed(self, message_ids: Sequence[str]) -> None:
        self.processed -= {canonical(m) for m in message_ids}

    async def claim_replies(
        self, messages: Sequence[tuple[str, str]]
    ) -> tuple[set[str], dict[str, Saga]]:
        fresh = await self.mark_processed_many(messages)
        return fresh, await self.load_many([s for _, s in messages], for_update=True)

    async def publish_pending_first(self, saga_ids: Sequence[str]) -> None:
        return None  # every message of the fake is published at its commit

    async def now(self) -> datetime:
        return self._db.clock.now()

    async def claim_due(self, limit: int, known: Sequence[tuple[str, int]]) -> list[str]:
        """As FOR UPDATE SKIP LOCKED: sagas locked by another open transaction are skipped."""
        now = self._db.clock.now()
        due = sorted(
            (s.wake_at, s.id)
            for s in self._visible()
            if s.wake_at is not None
            and s.wake_at <= now
            and (s.type, s.definition_version) in known
            and self._db.locks.get(s.id, self) is self
        )
        claimed = [saga_id for _, saga_id in due[:limit]]
        self._db.locks.update(dict.fromkeys(claimed, self))
        return claimed

    async def next_wake(self, known: Sequence[tuple[str, int]]) -> datetime | None:
        times = [
            s.wake_at
            for s in self._visible()
            if s.wake_at is not None and (s.type, s.definition_version) in known
        ]
        return min(times, default=None)

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        found = {}
        for saga_id in sorted({canonical(i) for i in saga_ids}):
            saga = self._saga(saga_id)
            if saga is not None:
                found[saga_id] = copy.deepcopy(saga)
                if for_update:
                    self._db.locks.setdefault(saga_id, self)
        return found

    async def insert_many(
        self, new: Sequence[tuple[Saga, Idempotency | None]], now: datetime
    ) -> None:
        for saga, idempotency in new:
            saga.version = 1
            stored = copy.deepcopy(saga)
            stored.started_at = now  # the row's creation time, as the real store keeps it
            self.new.append((stored, idempotency))

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        found = self._key(key)
        if found is None:
            return None
        saga_id, request_hash = found
        saga = self._saga(saga_id)
        assert saga is not None
        return copy.deepcopy(saga), request_hash

    async def update_many(self, sagas: Sequence[Saga], now: datetime) -> None:
        """Raises at once what the real store raises at `flush`; `flush` checks again."""
        for saga in sagas:
            current = self._saga(saga.id)
            if current is None or current.version != saga.version:
                raise ConcurrencyConflictError(f"saga {saga.id} changed")
            stored = copy.deepcopy(current)  # what an update writes, and no more
            stored.status = saga.status
            stored.context = copy.deepcopy(saga.context)
            stored.steps = copy.deepcopy(saga.steps)
            stored.parked = saga.parked
            stored.version = saga.version + 1
            self.updated.append((stored, saga.version))
            saga.version += 1

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        for saga_id, timeline, publications in appended:
            self.appended_timeline += [(saga_id, e) for e in timeline]
            self.appended_outbox += publications

    async def flush(self) -> set[str]:
        """New sagas whose id or key is taken are not stored, nor is anything of theirs."""
        twice = [i for i, n in Counter(s.id for s, _ in self.new).items() if n > 1]
        if twice:  # the real store's one statement cannot write a saga's steps twice
            raise psycopg.errors.CardinalityViolation(
                f"ON CONFLICT DO UPDATE command cannot affect row a second time: {twice}"
            )
        for stored, version_read in self.updated:
            current = self._saga(stored.id)
            if current is None or current.version != version_read:
                raise ConcurrencyConflictError(f"saga {stored.id} changed")
        refused = set()
        for saga, idempotency in self.new:
            if self._saga(saga.id) is not None or (
                idempotency is not None and self._key(idempotency.key) is not None
            ):
                refused.add(saga.id)
                continue
            if idempotency is not None:
                self.keys[idempotency.key] = (saga.id, idempotency.request_hash)
            self.sagas[saga.id] = saga
        for stored, _ in self.updated:
            self.sagas[stored.id] = stored
        self.timeline += [(i, e) for i, e in self.appended_timeline if i not in refused]
        self.outbox += [p for p in self.appended_outbox if p.message.saga_id not in refused]
        self.new, self.updated, self.appended_timeline, self.appended_outbox = [], [], [], []
        return refused


class FakeDatabase:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sagas: dict[str, Saga] = {}
        self.processed: set[str] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        self.timeline: list[tuple[str, TimelineEntry]] = []
        self.outbox: list[Publication] = []
        self.locks: dict[str, FakeStore] = {}  # saga id -> the open transaction holding it

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FakeStore]:
        store = FakeStore(self)
        try:
            yield store  # an exception here discards the store: a rollback
            await store.flush()
            self.sagas.update(store.sagas)
            self.processed |= store.processed
            self.keys.update(store.keys)
            self.timeline += store.timeline
            self.outbox += store.outbox
        finally:
            self.locks = {i: s for i, s in self.locks.items() if s is not store}


class CollectingPublisher:
    """Keeps what it is asked to publish, in order, instead of sending it to Kafka."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def publish(self, records: Sequence[Record]) -> None:
        self.records += records

    async def publish_each(self, records: Sequence[Record]) -> list[BaseException | None]:
        await self.publish(records)
        return [None] * len(records)
