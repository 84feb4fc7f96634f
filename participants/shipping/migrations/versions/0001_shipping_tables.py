"""shipping tables

The shipping participant's first revision. Until the participants had histories of their own,
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
    create_kit_tables_v1("shipping", if_not_exists=True)
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
        if_not_exists=True,
    )


def downgrade() -> None:
    drop_kit_tables_v1("shipping")
    op.drop_table("shipment", schema="shipping")
