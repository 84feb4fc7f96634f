"""inventory tables

The inventory participant's first revision. Until the participants had histories of their own,
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
    create_kit_tables_v1("inventory", if_not_exists=True)
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
        if_not_exists=True,
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
        if_not_exists=True,
    )


def downgrade() -> None:
    op.drop_table("reservation", schema="inventory")
    op.drop_table("stock", schema="inventory")
    drop_kit_tables_v1("inventory")
