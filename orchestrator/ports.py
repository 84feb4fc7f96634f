"""The ports the use cases need: data in, data out, no technology named."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from orchestrator.saga import messages
from orchestrator.saga.saga import Saga, TimelineEntry


@dataclasses.dataclass(frozen=True, slots=True)
class Publication:
    """A message bound for a topic, written to the outbox with the state change."""

    topic: str
    message: messages.Message
    recipient: str | None = None  # the participant a command is for; None for an event


@dataclasses.dataclass(slots=True)
class OutboxMessage:
    """An outbox row as its transaction wrote it; `id` is set once the row is written."""

    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    id: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class StartRequest:
    """A request to start a saga, from the api or the ingress topic."""

    saga_type: str
    input: Mapping[str, Any]
    version: int | None = None
    idempotency_key: str | None = None
    trace_id: str = ""
    saga_id: str | None = None  # a start that names its saga: a repeat starts nothing


# the saga and whether this request started it, or why this one request was refused
Started = tuple[Saga, bool] | Exception


@dataclasses.dataclass(frozen=True, slots=True)
class Idempotency:
    key: str
    request_hash: str
    expires_after_s: float | None = None  # an older saga's key is free for a new one


@dataclasses.dataclass(frozen=True, slots=True)
class Refused:
    """A message its handler refused without failing the rest of its batch (a reply that
    does not answer its step's last command): the consumer dead-letters it, with the
    reason, once the batch committed."""

    reason: str


class SagaStore(Protocol):
    """Everything one transaction may read and write; it commits all of it or none.

    Batch-first: each call takes or returns many. Reads go to the store at once; writes are
    collected and written together by `flush` (the unit of work calls it before committing;
    a caller that needs to know which new sagas were stored calls it earlier).
    """

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record (message id, saga id) pairs as applied; return the ids not recorded before."""

    async def forget_processed(self, message_ids: Sequence[str]) -> None:
        """Unrecord messages marked in this transaction: a copy of them is looked at again."""

    async def claim_replies(
        self, messages: Sequence[tuple[str, str]]
    ) -> tuple[set[str], dict[str, Saga]]:
        """`mark_processed_many` and `load_many(..., for_update=True)` of the sagas named,
        together: the ids not recorded before, and the sagas found, locked."""

    async def now(self) -> datetime:
        """The time of this transaction, by the store's one clock: every process that
        decides a saga and every timer compare times on the same clock."""

    async def claim_due(self, limit: int, known: Sequence[tuple[str, int]]) -> list[str]:
        """Lock and return sagas of a known (type, version) whose wake time has come, the
        earliest first, skipping those locked elsewhere. The others are left to the workers
        that have their definitions, however late."""

    async def next_wake(self, known: Sequence[tuple[str, int]]) -> datetime | None:
        """The earliest wake time of a saga of a known (type, version)."""

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        """The sagas found, by id, locked in one order everywhere."""

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        """The saga started with this key, and the hash of the request that started it."""

    async def insert_many(
        self, new: Sequence[tuple[Saga, Idempotency | None]], now: datetime
    ) -> None:
        """Store new sagas, unless their id or idempotency key is taken (see `flush`)."""

    async def update_many(self, sagas: Sequence[Saga], now: datetime) -> None:
        """Store each saga if its version is still the one loaded; `flush` raises
        ConcurrencyConflictError otherwise."""

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        """Timeline entries and outbox messages per saga, in the order given."""

    async def publish_pending_first(self, saga_ids: Sequence[str]) -> None:
        """Publish the sagas' earlier messages that are still unpublished (left by a process
        that crashed after its commit) before the ones this transaction writes: a path that
        decides without a reply (timers, operators) keeps per-saga order this way."""

    async def flush(self) -> set[str]:
        """Write what was collected; return the ids of the new sagas not stored because their
        id or idempotency key was taken (their steps, timeline and messages are dropped)."""


# The outbox rows are spread over this many shards by their key, so that the rows of one
# key are in one shard; each shard is published by one relay at a time, under its lease.
# Changing it moves keys between shards: every relay must stop first.
OUTBOX_SHARDS = 16


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimedRows:
    """What a relay claimed: the rows, in the order written, and the shards whose leases it
    holds for them."""

    rows: list[OutboxMessage]
    shards: frozenset[int]


class OutboxStore(Protocol):
    """The outbox, for the processes that publish it (the rows are written by SagaStore)."""

    async def join(self, owner: str, lease_s: float) -> list[str]:
        """Note the relay `owner` as alive now; return the relays seen within `lease_s`,
        `owner` among them (relays unseen for far longer are forgotten)."""

    async def leave(self, owner: str) -> None:
        """Forget the relay `owner` and release its leases: the others take over at once."""

    async def claim(
        self, owner: str, shards: Sequence[int], lease_s: float, limit: int, older_than_s: float
    ) -> ClaimedRows:
        """The oldest unpublished rows of `shards` older than `older_than_s`, in the order
        written, of the shards whose leases `owner` took or renewed; none of a shard whose
        lease another relay holds. No lease is taken for a shard without rows."""

    async def renew(self, owner: str, shards: Sequence[int], lease_s: float) -> bool:
        """Extend `owner`'s leases of `shards`; False if another relay took one of them."""

    async def release(self, owner: str) -> None:
        """Let go of every lease `owner` holds."""

    async def mark_published(self, ids: Sequence[int]) -> None: ...

    async def newest_id(self) -> int | None: ...

    async def purge(self, up_to_id: int, older_than_s: float, limit: int) -> int:
        """Delete rows up to `up_to_id` published more than `older_than_s` ago; how many."""

    async def count_failure(self, row_id: int, reason: str) -> int | None:
        """One more failed attempt; the attempts so far, None if published meanwhile."""

    async def park(self, message: OutboxMessage, reason: str, attempts: int) -> bool:
        """Set the row aside for an operator and mark its saga; False if published
        meanwhile."""


class PendingMarks(Protocol):
    """Outbox rows the broker acknowledged and that are not yet marked published: the next
    transaction of this process marks them as part of its own write."""

    def take(self) -> list[int]: ...

    def give_back(self, ids: Sequence[int]) -> None:
        """The transaction that took them did not commit."""


class UnitOfWork(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[SagaStore]: ...
