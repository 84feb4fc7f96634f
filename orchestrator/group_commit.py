"""Group commit: calls that arrive together share one transaction.

The first call goes at once; the calls that arrive while its transaction runs wait for it
and then go together, in one transaction, and so on. At low load nothing waits for company;
at high load the cost of a transaction (its round trips, its commit) is shared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class GroupCommit(Generic[Request, Result]):
    def __init__(
        self,
        commit: Callable[[Sequence[Request]], Awaitable[Sequence[Result]]],
        max_batch: int = 500,
    ) -> None:
        self._commit = commit
        self._max_batch = max_batch
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._running: asyncio.Task[None] | None = None

    async def submit(self, request: Request) -> Result:
        """The result of this request, once the transaction that took it committed; the
        error of the transaction, if it failed."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._run())
        return await future

    async def _run(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await self._commit([r for r, _ in batch])
            except Exception as exc:  # the transaction failed: every request in it did
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)


Item = TypeVar("Item")


class Merging(Generic[Item]):
    """`handle_many` for batches handed in side by side (by the lanes of a consumer loop).

    Up to `slots` calls run at once; the batches that arrive while they do are handled
    together, in the order they arrived, in the next free slot. So at high load batches
    share transactions, and a slow call holds up the batches in it, not every other. If a
    call of several batches fails, each is handled again alone, so that the error of one (a
    poison message) is the error of that batch only.
    """

    def __init__(
        self,
        handle_many: Callable[[list[Item]], Awaitable[object]],
        slots: int = 2,
        max_items: int = 500,
    ) -> None:
        self._handle_many = handle_many
        self._slots = slots
        self._max_items = max_items
        self._waiting: list[tuple[list[Item], asyncio.Future[object]]] = []
        self._running = 0  # counted in _run itself: a task's done callback comes later
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, batch: list[Item]) -> object:
        """What `handle_many` returned for this batch: its part of a list with an element
        per item, else what it returned."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        if self._running < self._slots:
            self._running += 1
            task = asyncio.ensure_future(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _next(self) -> list[tuple[list[Item], asyncio.Future[object]]]:
        taken, items = 0, 0
        for batch, _ in self._waiting:
            if taken and items + len(batch) > self._max_items:
                break
            taken, items = taken + 1, items + len(batch)
        together = self._waiting[:taken]
        del self._waiting[:taken]
        return [(b, f) for b, f in together if not f.cancelled()]

    async def _run(self) -> None:
        try:
            await self._handle_waiting()
        finally:
            self._running -= 1

    async def _handle_waiting(self) -> None:
        while self._waiting:
            together = self._next()
            if len(together) > 1:
                items = [item for batch, _ in together for item in batch]
                try:
                    result = await self._handle_many(items)
                except Exception:  # found out below, batch by batch
                    pass
                else:
                    start = 0
                    for batch, future in together:
                        part = result
                        if isinstance(result, list) and len(result) == len(items):
                            part = result[start : start + len(batch)]
                        start += len(batch)
                        _settle(future, part, None)
                    continue
            for batch, future in together:
                try:
                    result = await self._handle_many(batch)
                except Exception as exc:
                    _settle(future, None, exc)
                else:
                    _settle(future, result, None)


def _settle(future: asyncio.Future[object], result: object, error: BaseException | None) -> None:
    if future.done():  # its caller gave up waiting
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
