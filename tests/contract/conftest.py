"""A migrated PostgreSQL database for the contract tests: created once per module, its
tables emptied before each test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.unit_of_work import create_engine
from tests.conftest import service_urls
from tests.schemas import migrate_all

TABLES = "saga, saga_step, saga_timeline, outbox, processed_message"


@pytest.fixture(scope="module")
def migrated_database() -> Iterator[str]:
    database_url, _ = service_urls()
    admin = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"saga_contract_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        migrate_all(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
async def contract_engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(migrated_database, 4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def postgres_engine(contract_engine: AsyncEngine) -> AsyncEngine:
    """The engine of a database as fresh as a new one: no sagas, no messages."""
    async with contract_engine.begin() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    return contract_engine
