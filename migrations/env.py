"""Alembic environment: the orchestrator's tables and every participant's schema."""

from __future__ import annotations

import asyncio
import importlib

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine

from orchestrator.store.tables import metadata as orchestrator_metadata
from participants import registry

participant_metadata = [importlib.import_module(m).metadata for m in registry.table_modules()]
target_metadata = [orchestrator_metadata, *participant_metadata]
SCHEMAS = {m.schema for m in participant_metadata}


def _database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from orchestrator.settings import load_settings

    return load_settings().database_url


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    if type_ == "schema":
        return name is None or name in SCHEMAS
    return True


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=_include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
