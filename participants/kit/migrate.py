"""Each participant owns its schema and migrates it with an Alembic history of its own.

What a participant package ships, beside the module defining its Participant:

    mypackage/
        handlers.py         PARTICIPANT = Participant(..., migrations=Path(__file__).parent
                                                           / "migrations")
        tables.py           metadata = participant_metadata("myschema"); its tables, and
                            inbox, ledger = kit_tables(metadata)
        migrations/
            env.py          from participants.kit.migrate import run_env
                            run_env()
            script.py.mako  the template of new revisions (copy a shipped participant's)
            versions/       the revisions; the first one creates the tables

(Declare `migrations/**` as package data so that it ships in the wheel.)

`participants migrate NAME` applies the history up to its head (`--revision` for another
one), `participants migrate --all` every participant's, and `participants revision NAME -m
MESSAGE [--autogenerate]` writes a new revision into `versions/`, compared against the
metadata of the participant's inbox table when autogenerating.

The history keeps its own version table, `alembic_version` in the participant's schema
(`Participant.schema`), apart from the orchestrator's and every other participant's: each
is migrated, and released, on its own. A participant's worker is ready only when its schema
is at the head of its history (`check_at_head`).

A participant whose tables already exist (made by hand or by another tool; the shipped
participants' were made by the orchestrator's own history until they had theirs) adopts
them when its first revision creates its tables with `op.create_table(...,
if_not_exists=True)`, as the shipped participants' first revisions do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command, context, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.saga.errors import OrchestratorError
from orchestrator.store import migrate as alembic_runner
from participants.kit.participant import Participant


class NoMigrationsError(OrchestratorError):
    """The participant ships no migrations of its own."""


class MigrationEnvError(OrchestratorError):
    """A participant's env.py cannot tell which schema it migrates."""


def version_table(schema: str, name: str) -> str:
    """`alembic_version` in the participant's schema; in `public`, where the orchestrator's
    own is, one named after the participant."""
    return "alembic_version" if schema != "public" else f"alembic_version_{name}"


def _version_options(schema: str, name: str) -> dict[str, str]:
    return {"version_table": version_table(schema, name), "version_table_schema": schema}


def run_env(target_metadata: sa.MetaData | None = None) -> None:
    """The whole of a participant's `migrations/env.py`.

    The participant comes from `participants migrate|revision` (the config attribute
    `participant`); run by `alembic` itself, pass the participant's metadata, whose schema
    then holds the version table. The database URL is the config's `sqlalchemy.url`, else
    SAGA_DATABASE_URL.
    """
    participant: Participant | None = context.config.attributes.get("participant")
    if participant is not None:
        schema, name = participant.schema, participant.name
        target_metadata = target_metadata or participant.inbox.metadata
    elif target_metadata is not None and target_metadata.schema:
        schema = name = target_metadata.schema
    else:
        raise MigrationEnvError(
            "run_env() needs the participant's metadata, with its schema, when not run by "
            "`participants migrate`"
        )

    def include_name(name: str | None, type_: str, parent_names: object) -> bool:
        return name == schema if type_ == "schema" else True

    options: dict[str, Any] = {
        **_version_options(schema, name),
        "target_metadata": target_metadata,
        "include_schemas": True,
        "include_name": include_name,
        "compare_type": True,
    }
    if context.is_offline_mode():
        context.configure(url=_database_url(), literal_binds=True, **options)
        _run_in_transaction(schema)
        return
    engine = sa.create_engine(_database_url(), poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, **options)
            _run_in_transaction(schema)
    finally:
        engine.dispose()


def _run_in_transaction(schema: str) -> None:
    with context.begin_transaction():
        # Two migrators of one schema (replicas starting together) take turns.
        lock_key = "'alembic " + schema.replace("'", "''") + "'"
        context.execute(f"SELECT pg_advisory_xact_lock(hashtext({lock_key}))")
        # Alembic creates its version table, in this schema, before the first revision runs.
        quoted = '"' + schema.replace('"', '""') + '"'
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        context.run_migrations()


def _database_url() -> str:
    url = context.config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from orchestrator.settings import load_settings

    return load_settings().database_url


def upgrade(participant: Participant, database_url: str, revision: str = "head") -> None:
    """Apply the participant's history up to `revision`."""
    command.upgrade(_config(participant, database_url), revision)


def current(participant: Participant, database_url: str) -> list[str]:
    """The revisions the participant's schema is at (none before its first migration)."""
    opts = _version_options(participant.schema, participant.name)
    engine = sa.create_engine(database_url, poolclass=sa.NullPool)
    try:
        with engine.connect() as connection:
            return sorted(MigrationContext.configure(connection, opts=opts).get_current_heads())
    finally:
        engine.dispose()


def downgrade(participant: Participant, database_url: str, revision: str) -> None:
    command.downgrade(_config(participant, database_url), revision)


def revision(
    participant: Participant, database_url: str, message: str, autogenerate: bool = False
) -> Path:
    """Write a new revision into the participant's `versions/` and return its path. Its id
    follows the history's numbering when the revisions are numbered (0001, 0002...)."""
    config = _config(participant, database_url)
    names = [path.name for path in (_migrations(participant) / "versions").glob("*.py")]
    numbers = [int(match.group(1)) for n in names if (match := re.match(r"(\d+)_", n))]
    rev_id = f"{max(numbers, default=0) + 1:04d}" if len(numbers) == len(names) else None
    script = command.revision(config, message=message, autogenerate=autogenerate, rev_id=rev_id)
    assert isinstance(script, Script)  # one head, one new revision
    return Path(script.path)


def check(participant: Participant, database_url: str) -> None:
    """Raise alembic's AutogenerateDiffsDetected when the tables in code differ from what
    the history creates (the database must be at head)."""
    command.check(_config(participant, database_url))


async def check_at_head(participant: Participant, engine: AsyncEngine) -> None:
    """Raise SchemaNotAtHeadError unless the participant's schema is at the head of its
    history; a participant without migrations of its own always passes."""
    if participant.migrations is None:
        return
    expected = alembic_runner.heads(participant.migrations)
    found = await alembic_runner.current_heads(
        engine, version_table(participant.schema, participant.name), participant.schema
    )
    if found != expected:
        raise alembic_runner.SchemaNotAtHeadError(
            f"the schema {participant.schema!r} of participant {participant.name!r} is at "
            f"{sorted(found) or 'no revision'}, the code expects {sorted(expected)}: "
            f"run `participants migrate {participant.name}`"
        )


def _migrations(participant: Participant) -> Path:
    if participant.migrations is None:
        raise NoMigrationsError(
            f"participant {participant.name!r} ships no migrations (Participant.migrations)"
        )
    return participant.migrations


def _config(participant: Participant, database_url: str) -> Config:
    return alembic_runner.alembic_config(
        database_url, _migrations(participant), participant=participant
    )


def create_kit_tables_v1(schema: str, *, if_not_exists: bool = False) -> None:
    """The kit's inbox and step ledger as version 1 of the kit keeps them, for a
    participant's first revision to create. Frozen: a kit that changes them adds a
    `create_kit_tables_v2` and a revision that migrates, and never changes this one, so that
    a revision keeps creating what it created when it was written."""
    op.create_table(
        "inbox",
        sa.Column("message_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("command_type", sa.Text(), nullable=False),
        sa.Column("reply", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_inbox")),
        schema=schema,
        if_not_exists=if_not_exists,
    )
    op.create_table(
        "step_ledger",
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("step", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('applied', 'compensated', 'tombstone')",
            name=op.f("ck_step_ledger_state_known"),
        ),
        sa.PrimaryKeyConstraint("saga_id", "step", name=op.f("pk_step_ledger")),
        schema=schema,
        if_not_exists=if_not_exists,
    )


def drop_kit_tables_v1(schema: str) -> None:
    op.drop_table("step_ledger", schema=schema)
    op.drop_table("inbox", schema=schema)


def create_kit_inbox_index_v2(schema: str) -> None:
    """Version 2 of the kit's tables: the index by which the inbox's replies past the
    retention are purged (SAGA_DEDUP_RETENTION_S). Frozen, as v1."""
    op.create_index(
        "ix_inbox_received_at",
        "inbox",
        ["received_at"],
        schema=schema,
        postgresql_using="brin",
        if_not_exists=True,
    )


def drop_kit_inbox_index_v2(schema: str) -> None:
    op.drop_index("ix_inbox_received_at", table_name="inbox", schema=schema)
