"""What one statement costs the client on this machine: SQLAlchemy Core (async) against
plain psycopg, and a transaction around one statement.

    python -m bench.statements      (uses SAGA_DATABASE_URL, or .env)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import psycopg
import sqlalchemy as sa

from orchestrator.settings import load_settings
from orchestrator.store.unit_of_work import create_engine

ROUNDS = 2000


async def _cost(what: str, once: Callable[[], Awaitable[object]], rounds: int = ROUNDS) -> None:
    for _ in range(rounds // 10):
        await once()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(rounds):
        await once()
    cpu_us = (time.process_time() - cpu) / rounds * 1e6
    wall_us = (time.perf_counter() - wall) / rounds * 1e6
    print(f"{what:<44} {cpu_us:7.0f} µs CPU {wall_us:7.0f} µs wall")


async def main() -> None:
    url = load_settings().database_url
    engine = create_engine(url, 2, pre_ping=False)
    select_one = sa.select(sa.literal(1))
    try:
        async with engine.connect() as conn:
            await _cost("SQLAlchemy Core: SELECT 1", lambda: conn.execute(select_one))
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        async with await psycopg.AsyncConnection.connect(plain, autocommit=True) as raw:
            await _cost("psycopg: SELECT 1", lambda: raw.execute("SELECT 1"))

        async def transaction() -> None:
            async with engine.begin() as conn:
                await conn.execute(select_one)

        await _cost("SQLAlchemy: BEGIN, SELECT 1, COMMIT", transaction, ROUNDS // 4)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
