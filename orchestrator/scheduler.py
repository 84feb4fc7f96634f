"""Fires due deadlines and retries. Durable: the times live in PostgreSQL, so a restarted
or different worker fires what a crashed one left."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime

import structlog

from orchestrator.service import SagaService

log = structlog.get_logger(__name__)


class Timers:
    """Sleeps until the next wake time it knows of, or `interval_s` at most.

    It learns wake times from the database after each round and from this process's own
    commits (`wake_at`); `interval_s` bounds how late it sees a wake time set by another
    process (the api's first deadline, another worker's retry). Nothing runs in between.
    """

    def __init__(self, service: SagaService, interval_s: float, batch_size: int = 100) -> None:
        self._service = service
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._woken = asyncio.Event()
        self._next_at = 0.0  # monotonic time of the next round

    def wake_at(self, at: datetime | None) -> None:
        if at is None:
            return
        due_in = at.timestamp() - time.time()
        if time.monotonic() + due_in < self._next_at:
            self._woken.set()

    async def run(self) -> None:
        backoff = self._interval_s
        while True:
            self._woken.clear()
            try:
                fired, next_wake = await self._service.fire_due(self._batch_size)
                backoff = self._interval_s
                sleep_s = self._interval_s
                if next_wake is not None:
                    sleep_s = min(sleep_s, max(0.0, next_wake.timestamp() - time.time()))
            except Exception as exc:  # keep firing whatever broke; the times are still stored
                log.warning("timer_firing_failed", error=repr(exc), retry_in_s=backoff)
                fired, sleep_s = 0, backoff
                backoff = min(backoff * 2, 5.0)
            if fired:  # at once again: for more that are due, or to learn the next wake time
                continue
            self._next_at = time.monotonic() + sleep_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), sleep_s)
