from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from participants.kit.tables import kit_tables, participant_metadata

SCHEMA = "inventory"
metadata = participant_metadata(SCHEMA)
inbox, ledger = kit_tables(metadata)

stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.CheckConstraint("quantity >= 0", name="never_negative"),
)

reservation = sa.Table(
    "reservation",
    metadata,
    sa.Column("saga_id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("sku", sa.Text, sa.ForeignKey("inventory.stock.sku"), primary_key=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.CheckConstraint("quantity > 0", name="positive"),
    sa.CheckConstraint("status IN ('reserved', 'released')", name="status_known"),
)
