"""orchestrator and participant tables

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


PARTICIPANT_SCHEMAS = ("inventory", "payment", "shipping")


def upgrade() -> None:
    for schema in PARTICIPANT_SCHEMAS:
        op.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
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
        schema="inventory",
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
        schema="inventory",
    )
    op.create_table(
        "stock",
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("quantity >= 0", name=op.f("ck_stock_never_negative")),
        sa.PrimaryKeyConstraint("sku", name=op.f("pk_stock")),
        schema="inventory",
    )
    op.create_table(
        "reservation",
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("sku", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('reserved', 'released')", name=op.f("ck_reservation_status_known")
        ),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservation_positive")),
        sa.ForeignKeyConstraint(
            ["sku"], ["inventory.stock.sku"], name=op.f("fk_reservation_sku_stock")
        ),
        sa.PrimaryKeyConstraint("saga_id", "sku", name=op.f("pk_reservation")),
        schema="inventory",
    )
    op.create_table(
        "charge",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('captured', 'refunded')", name=op.f("ck_charge_status_known")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_charge_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_charge")),
        sa.UniqueConstraint("saga_id", name=op.f("uq_charge_saga_id")),
        schema="payment",
    )
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
        schema="payment",
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
        schema="payment",
    )
    op.create_table(
        "refund",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("charge_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["charge_id"], ["payment.charge.id"], name=op.f("fk_refund_charge_id_charge")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
        sa.UniqueConstraint("charge_id", name=op.f("uq_refund_charge_id")),
        schema="payment",
    )
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
        schema="shipping",
    )
    op.create_table(
        "shipment",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("city", sa.Text(), nullable=False),
        sa.Column("line1", sa.Text(), nullable=False),
        sa.Column("postal_code", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('created', 'cancelled')", name=op.f("ck_shipment_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment")),
        sa.UniqueConstraint("saga_id", name=op.f("uq_shipment_saga_id")),
        schema="shipping",
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
        schema="shipping",
    )


def downgrade() -> None:
    op.drop_table("step_ledger", schema="shipping")
    op.drop_table("shipment", schema="shipping")
    op.drop_table("inbox", schema="shipping")
    op.drop_table("refund", schema="payment")
    op.drop_table("step_ledger", schema="payment")
    op.drop_table("inbox", schema="payment")
    op.drop_table("charge", schema="payment")
    op.drop_table("reservation", schema="inventory")
    op.drop_table("stock", schema="inventory")
    op.drop_table("step_ledger", schema="inventory")
    op.drop_table("inbox", schema="inventory")
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
    for schema in PARTICIPANT_SCHEMAS:
        op.execute(f"DROP SCHEMA IF EXISTS {schema}")
