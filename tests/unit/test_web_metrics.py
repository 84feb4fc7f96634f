"""/metrics asks the database for its gauges at most once per SAGA_METRICS_CACHE_S."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from orchestrator.api.routes import CachedStats
from orchestrator.store.queries import SqlSagaReader


class CountingReader:
    def __init__(self) -> None:
        self.queries = 0

    async def stats(self) -> dict[str, Any]:
        self.queries += 1
        await asyncio.sleep(0.01)
        return {"queries": self.queries}


async def test_scrapes_within_the_cache_age_share_one_query() -> None:
    reader = CountingReader()
    cached = CachedStats(cast(SqlSagaReader, reader), max_age_s=60)

    answers = await asyncio.gather(*(cached.get() for _ in range(20)))

    assert reader.queries == 1
    assert all(a == {"queries": 1} for a in answers)


async def test_a_stale_cache_queries_again() -> None:
    reader = CountingReader()
    cached = CachedStats(cast(SqlSagaReader, reader), max_age_s=0.05)
    await cached.get()
    await asyncio.sleep(0.06)

    assert await cached.get() == {"queries": 2}


async def test_no_cache_age_queries_every_time() -> None:
    reader = CountingReader()
    cached = CachedStats(cast(SqlSagaReader, reader), max_age_s=0)

    for _ in range(3):
        await cached.get()

    assert reader.queries == 3
