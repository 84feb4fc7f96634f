"""Runs purges in the background: every `interval_s`, each purge in batches until it finds
fewer rows than a batch, yielding to the traffic between batches."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence

import structlog

from orchestrator import metrics
from orchestrator.faults import describe

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Purge:
    what: str  # for the metric and the logs
    remove: Callable[[int], Awaitable[int]]  # removes at most that many rows; says how many
    batch: int = 1000


class Housekeeping:
    def __init__(self, purges: Sequence[Purge], interval_s: float) -> None:
        self._purges = purges
        self._interval_s = interval_s

    async def run(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self._interval_s)

    async def once(self) -> dict[str, int]:
        """Run every purge until it is done; how many rows each removed. A purge that fails
        is logged and tried again next time; the others run all the same."""
        removed = {}
        for purge in self._purges:
            removed[purge.what] = 0
            try:
                while True:
                    n = await purge.remove(purge.batch)
                    removed[purge.what] += n
                    metrics.PURGED.labels(purge.what).inc(n)
                    if n < purge.batch:
                        break
                    await asyncio.sleep(0)
            except Exception as exc:  # the database away, say: next round
                log.warning("purge_failed", what=purge.what, error=describe(exc))
            if removed[purge.what]:
                log.info("purged", what=purge.what, count=removed[purge.what])
        return removed
