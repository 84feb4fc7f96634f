from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import service_urls
from tests.schemas import migrate_all


@pytest.fixture
def empty_database() -> Iterator[str]:
    database_url, _ = service_urls()
    admin = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"saga_migrations_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def migrated_database(empty_database: str) -> str:
    """A database with the orchestrator's and every shipped participant's tables."""
    migrate_all(empty_database)
    return empty_database
