"""The inbox and the step ledger each participant keeps in its own schema."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from orchestrator.store.tables import NAMING_CONVENTION


def participant_metadata(schema: str) -> sa.MetaData:
    return sa.MetaData(schema=schema, naming_convention=NAMING_CONVENTION)


def kit_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """The inbox answers a repeated command with its stored reply; the ledger knows, per
    saga step, whether the action was applied, compensated, or tombstoned by a compensation
    that arrived first."""
    inbox = sa.Table(
        "inbox",
        metadata,
        sa.Column("message_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("saga_id", pg.UUID(as_uuid=False), nullable=False),
        sa.Column("step", sa.Text, nullable=False),
        sa.Column("command_type", sa.Text, nullable=False),
        sa.Column("reply", sa.LargeBinary, nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        # the purge finds the replies past the retention by it (inserts come in time order)
        sa.Index("ix_inbox_received_at", "received_at", postgresql_using="brin"),
    )
    ledger = sa.Table(
        "step_ledger",
        metadata,
        sa.Column("saga_id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("step", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("data", pg.JSONB, nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint("state IN ('applied', 'compensated', 'tombstone')", name="state_known"),
    )
    return inbox, ledger
