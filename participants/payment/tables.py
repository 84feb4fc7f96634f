from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from participants.kit.tables import kit_tables, participant_metadata

SCHEMA = "payment"
metadata = participant_metadata(SCHEMA)
inbox, ledger = kit_tables(metadata)

charge = sa.Table(
    "charge",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column("saga_id", pg.UUID(as_uuid=False), nullable=False, unique=True),
    sa.Column("order_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("card_last4", sa.String(4), nullable=False),
    sa.Column("statement_descriptor", sa.Text, nullable=True),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
    sa.CheckConstraint("amount > 0", name="positive"),
    sa.CheckConstraint("status IN ('captured', 'refunded')", name="status_known"),
)

refund = sa.Table(
    "refund",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
    sa.Column(
        "charge_id",
        pg.UUID(as_uuid=False),
        sa.ForeignKey("payment.charge.id"),
        nullable=False,
        unique=True,
    ),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
    ),
)
