"""The ports the use cases need: data in, data out, no technology named."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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


class SagaStore(Protocol):
    """Everything one transaction may read and write; it commits all of it or none."""

    async def mark_processed(self, message_id: str, saga_id: str) -> bool:
        """Record that a message was applied; False when it already was."""

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        """Lock and return sagas whose wake time has come, skipping those locked elsewhere."""

    async def load(self, saga_id: str, *, for_update: bool) -> Saga | None: ...

    async def insert(self, saga: Saga, now: datetime) -> None: ...

    async def update(self, saga: Saga, now: datetime) -> None:
        """Store the saga if its version is still the one loaded, else raise a conflict."""

    async def append(
        self,
        saga_id: str,
        timeline: Sequence[TimelineEntry],
        publications: Sequence[Publication],
        now: datetime,
    ) -> None: ...


class UnitOfWork(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[SagaStore]: ...


class SagaReader(Protocol):
    async def saga_view(self, saga_id: str) -> dict[str, Any] | None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
