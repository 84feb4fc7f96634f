"""The ports the use cases need: data in, data out, no technology named."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol

from orchestrator.saga import messages
from orchestrator.saga.saga import Saga, TimelineEntry


@dataclasses.dataclass(frozen=True, slots=True)
class Publication:
    """A message bound for a topic, written to the outbox with the state change."""

    topic: str
    message: messages.Message


@dataclasses.dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    request_hash: str


class DuplicateIdempotencyKeyError(Exception):
    """Another transaction stored a saga with this idempotency key first."""


class SagaStore(Protocol):
    """Everything one transaction may read and write; it commits all of it or none."""

    async def mark_processed(self, message_id: str, saga_id: str) -> bool:
        """Record that a message was applied; False when it already was."""

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record (message id, saga id) pairs as applied; return the ids not recorded before."""

    async def now(self) -> datetime:
        """The time of this transaction, by the store's one clock: every process that
        decides a saga and every timer compare times on the same clock."""

    async def claim_due(
        self, limit: int, known: Sequence[tuple[str, int]], orphaned_after_s: float
    ) -> list[str]:
        """Lock and return sagas whose wake time has come, skipping those locked elsewhere:
        those of a known (type, version), and any overdue by `orphaned_after_s`."""

    async def load(self, saga_id: str, *, for_update: bool) -> Saga | None: ...

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        """The sagas found, by id, locked in one order everywhere."""

    async def insert(self, saga: Saga, now: datetime, idempotency: Idempotency | None) -> None:
        """Store a new saga; raise DuplicateIdempotencyKey when the key is taken."""

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        """The saga started with this key, and the hash of the request that started it."""

    async def update(self, saga: Saga, now: datetime) -> None:
        """Store the saga if its version is still the one loaded, else raise a conflict."""

    async def update_many(self, sagas: Sequence[Saga], now: datetime) -> None: ...

    async def append(
        self,
        saga_id: str,
        timeline: Sequence[TimelineEntry],
        publications: Sequence[Publication],
        now: datetime,
    ) -> None: ...

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None: ...


class UnitOfWork(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[SagaStore]: ...
