"""payment tables

The payment participant's first revision. Until the participants had histories of their own,
the orchestrator's (revisions 0001-0010) created these tables: on such a database this
revision finds them and only records that the schema is at 0001.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 06:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from participants.kit.migrate import create_kit_tables_v1, drop_kit_tables_v1

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "charge",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("order_id", sa.Text(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("card_last4", sa.String(length=4), nullable=False),
        sa.Column("statement_descriptor", sa.Text(), nullable=True),
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
        if_not_exists=True,
    )
    # The orchestrator's history added this column in its 0007: a database it left before
    # 0007 has the table without it.
    op.execute("ALTER TABLE payment.charge ADD COLUMN IF NOT EXISTS statement_descriptor text")
    create_kit_tables_v1("payment", if_not_exists=True)
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
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("refund", schema="payment")
    drop_kit_tables_v1("payment")
    op.drop_table("charge", schema="payment")
