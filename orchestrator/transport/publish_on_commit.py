"""Publish on commit: a process publishes the outbox messages it committed right after the
commit, and marks them once the broker has them. The relay only recovers what this leaves
unpublished (a crash between the commit and the broker's acknowledgement, a broker away).

Per-saga order holds: a saga's next messages are only decided after the reply to its
previous ones, which were therefore published; the paths that decide without a reply
(timers, operators) publish the saga's earlier unpublished messages first (see
`SagaStore.publish_pending_first`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog

from orchestrator import metrics
from orchestrator.faults import describe
from orchestrator.ports import OutboxMessage
from orchestrator.transport.producer import Publisher, Record, Sent

log = structlog.get_logger(__name__)

Mark = Callable[[Sequence[int]], Awaitable[None]]


class PublishOnCommit:
    def __init__(
        self,
        publisher: Publisher,
        mark: Mark,
        left_unpublished: Callable[[], None] = lambda: None,
        mark_after_s: float = 0.1,
    ) -> None:
        """Acknowledged rows are marked by the next transaction of the process (see
        `take`), or, if none comes within `mark_after_s`, by one of their own."""
        self._publisher = publisher
        self._mark = mark
        self._left_unpublished = left_unpublished
        self._mark_after_s = mark_after_s
        self._settling: set[asyncio.Future[None]] = set()
        self._to_mark: list[int] = []
        self._marking: asyncio.Future[None] | None = None

    async def __call__(self, messages: Sequence[OutboxMessage]) -> None:
        """Hand the messages to the producer, in order; their acknowledgements and marks
        follow in the background. Never raises: what is not published, the relay publishes."""
        try:
            sent = await self._publisher.send_each(
                [Record(m.topic, m.key, m.value, m.headers) for m in messages]
            )
        except Exception as exc:
            self._left(len(messages), exc)
            return
        settling = asyncio.ensure_future(self._settle(messages, sent))
        self._settling.add(settling)
        settling.add_done_callback(self._settling.discard)

    async def _settle(self, messages: Sequence[OutboxMessage], sent: Sent) -> None:
        try:
            outcomes = await self._publisher.settle(sent)
        except Exception as exc:
            self._left(len(messages), exc)
            return
        published = [m.id for m, error in zip(messages, outcomes, strict=True) if error is None]
        errors = [error for error in outcomes if error is not None]
        if errors:
            self._left(len(errors), errors[0])
        if published:
            metrics.PUBLISHED_ON_COMMIT.inc(len(published))
            self.give_back(published)

    def take(self) -> list[int]:
        """The acknowledged rows not yet marked, for a transaction to mark (PendingMarks)."""
        ids, self._to_mark = self._to_mark, []
        return ids

    def give_back(self, ids: Sequence[int]) -> None:
        self._to_mark += ids
        if self._marking is None or self._marking.done():
            self._marking = asyncio.ensure_future(self._mark_all())

    async def _mark_all(self) -> None:
        """One UPDATE for the ids that no transaction of this process took meanwhile."""
        await asyncio.sleep(self._mark_after_s)
        while self._to_mark:
            ids, self._to_mark = self._to_mark, []
            try:
                await self._mark(ids)
            except Exception as exc:  # the relay publishes them again; consumers drop repeats
                log.warning("outbox_mark_failed", count=len(ids), error=describe(exc))

    def _left(self, count: int, error: BaseException) -> None:
        log.warning("outbox_left_for_relay", count=count, error=describe(error))
        self._left_unpublished()

    async def drain(self) -> None:
        """Wait for the acknowledgements and marks under way (at shutdown)."""
        while self._settling:
            await asyncio.wait(set(self._settling))
        if self._marking is not None:
            await self._marking
