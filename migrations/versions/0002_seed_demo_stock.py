"""Seed stock for the demo SKUs

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SKUS = ("SKU-RED", "SKU-BLUE")


def upgrade() -> None:
    for sku in SKUS:
        op.execute(
            f"INSERT INTO inventory.stock (sku, quantity) VALUES ('{sku}', 1000) "
            "ON CONFLICT (sku) DO NOTHING"
        )


def downgrade() -> None:
    # Stock that reservations refer to stays: its history is data, not seed.
    op.execute(
        "DELETE FROM inventory.stock s WHERE sku IN ('SKU-RED', 'SKU-BLUE') AND NOT EXISTS "
        "(SELECT 1 FROM inventory.reservation r WHERE r.sku = s.sku)"
    )
