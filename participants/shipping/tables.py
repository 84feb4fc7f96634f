from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from participants.kit.tables import kit_tables, participant_metadata

SCHEMA = "shipping"
metadata = participant_metadata(SCHEMA)
inbox, ledger = kit_tables(metadata)

shipment = sa.Table(
    "shipment",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("saga_id", pg.UUID(as_uuid=False), nullable=False, unique=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("country", sa.String(2), nullable=False),
    sa.Column("city", sa.Text, nullable=False),
    sa.Column("line1", sa.Text, nullable=False),
    sa.Column("postal_code", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.CheckConstraint("status IN ('created', 'cancelled')", name="status_known"),
)
