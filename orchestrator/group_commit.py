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
