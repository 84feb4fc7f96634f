"""Fires due deadlines and retries. Durable: the times live in PostgreSQL, so a restarted
or different worker fires what a crashed one left."""

from __future__ import annotations

import asyncio

import structlog

from orchestrator.service import SagaService

log = structlog.get_logger(__name__)


async def run_timers(service: SagaService, interval_s: float, batch_size: int = 100) -> None:
    backoff = interval_s
    while True:
        try:
            fired = await service.fire_timers(batch_size)
            backoff = interval_s
        except Exception as exc:  # keep firing whatever broke; the times are still stored
            log.warning("timer_firing_failed", error=repr(exc), retry_in_s=backoff)
            fired = 0
            backoff = min(backoff * 2, 5.0)
        if fired < batch_size:
            await asyncio.sleep(backoff)
