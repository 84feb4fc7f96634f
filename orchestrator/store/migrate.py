"""Runs Alembic histories: the orchestrator's own (`migrations/`), and, through the same
helpers, each participant's (participants/kit/migrate.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.saga.errors import NotReadyError


class SchemaNotAtHeadError(NotReadyError):
    """The database schema is not at the newest revision."""


MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(
    database_url: str, script_location: Path = MIGRATIONS, **attributes: Any
) -> Config:
    """A configuration without an ini file; `attributes` reach the history's env.py as
    `context.config.attributes`."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes.update(attributes)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def heads(script_location: Path) -> set[str]:
    """The newest revisions of the history in `script_location`."""
    return set(ScriptDirectory(str(script_location)).get_heads())


async def current_heads(
    engine: AsyncEngine,
    version_table: str = "alembic_version",
    version_table_schema: str | None = None,
) -> set[str]:
    """The revisions the database is at, by its version table."""
    opts = {"version_table": version_table, "version_table_schema": version_table_schema}
    async with engine.connect() as conn:
        return set(
            await conn.run_sync(
                lambda c: MigrationContext.configure(c, opts=opts).get_current_heads()
            )
        )


async def check_at_head(engine: AsyncEngine) -> None:
    """Raise SchemaNotAtHeadError unless the database is at the newest revision."""
    expected = heads(MIGRATIONS)
    current = await current_heads(engine)
    if current != expected:
        raise SchemaNotAtHeadError(
            f"the database is at {sorted(current) or 'no revision'}, the code expects "
            f"{sorted(expected)}: run `orchestrator migrate`"
        )
