"""Runs the Alembic migrations shipped with the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.saga.errors import NotReadyError


class SchemaNotAtHeadError(NotReadyError):
    """The database schema is not at the newest revision."""


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


async def check_at_head(engine: AsyncEngine) -> None:
    """Raise SchemaNotAtHeadError unless the database is at the newest revision."""
    heads = set(ScriptDirectory.from_config(alembic_config("postgresql://")).get_heads())
    async with engine.connect() as conn:
        current = set(
            await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_heads())
        )
    if current != heads:
        raise SchemaNotAtHeadError(
            f"the database is at {sorted(current) or 'no revision'}, the code expects "
            f"{sorted(heads)}: run `orchestrator migrate`"
        )
