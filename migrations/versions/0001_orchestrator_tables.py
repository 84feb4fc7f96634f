"""orchestrator tables

This revision once also created the inventory, payment and shipping participants' schemas
and tables; they moved to the participants' own histories (`participants migrate NAME`),
whose first revisions adopt the tables this revision created on existing databases.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:37:36.457668
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        unique=False,
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_table(
        "processed_message",
        sa.Column("message_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column(
            "processed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_processed_message")),
    )
    op.create_table(
        "saga",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("definition_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("input", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("context", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'compensating', 'completed', 'compensated', 'failed')",
            name=op.f("ck_saga_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_saga_idempotency_key")),
    )
    op.create_index(op.f("ix_saga_created_at_id"), "saga", ["created_at", "id"], unique=False)
    op.create_index(
        op.f("ix_saga_status_updated_at"), "saga", ["status", "updated_at"], unique=False
    )
    op.create_table(
        "saga_step",
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("compensation_attempt", sa.Integer(), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["saga_id"], ["saga.id"], name=op.f("fk_saga_step_saga_id_saga"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("saga_id", "name", name=op.f("pk_saga_step")),
    )
    op.create_table(
        "saga_timeline",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("step", sa.Text(), nullable=True),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("message_id", sa.UUID(as_uuid=False), nullable=True),
        sa.ForeignKeyConstraint(
            ["saga_id"],
            ["saga.id"],
            name=op.f("fk_saga_timeline_saga_id_saga"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_timeline")),
    )
    op.create_index(
        op.f("ix_saga_timeline_saga_id_id"), "saga_timeline", ["saga_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_saga_timeline_saga_id_id"), table_name="saga_timeline")
    op.drop_table("saga_timeline")
    op.drop_table("saga_step")
    op.drop_index(op.f("ix_saga_status_updated_at"), table_name="saga")
    op.drop_index(op.f("ix_saga_created_at_id"), table_name="saga")
    op.drop_table("saga")
    op.drop_table("processed_message")
    op.drop_index(
        "ix_outbox_unpublished",
        table_name="outbox",
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.drop_table("outbox")
