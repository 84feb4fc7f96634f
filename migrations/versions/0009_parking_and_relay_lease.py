"""parked sagas and outbox rows, monotonic attempts, the relay lease

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("saga", sa.Column("parked_reason", sa.Text(), nullable=True))
    op.add_column("saga", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_saga_parked_at",
        "saga",
        ["parked_at"],
        postgresql_where=sa.text("parked_at IS NOT NULL"),
    )
    for column in ("retry_base", "compensation_base"):
        op.add_column(
            "saga_step",
            sa.Column(column, sa.Integer(), nullable=False, server_default=sa.text("0")),
        )
    op.add_column(
        "outbox", sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
    )
    op.add_column("outbox", sa.Column("last_error", sa.Text(), nullable=True))
    op.add_column("outbox", sa.Column("parked_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.create_index(
        "ix_outbox_unpublished",
        "outbox",
        ["id"],
        postgresql_where=sa.text("published_at IS NULL AND parked_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_parked", "outbox", ["id"], postgresql_where=sa.text("parked_at IS NOT NULL")
    )
    op.create_table(
        "outbox_relay_lease",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_outbox_relay_lease_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_relay_lease")),
    )
    op.execute("INSERT INTO outbox_relay_lease (id, owner, expires_at) VALUES (1, '', now())")


def downgrade() -> None:
    op.drop_table("outbox_relay_lease")
    op.drop_index("ix_outbox_parked", table_name="outbox")
    op.drop_index("ix_outbox_unpublished", table_name="outbox")
    op.create_index(
        "ix_outbox_unpublished", "outbox", ["id"], postgresql_where=sa.text("published_at IS NULL")
    )
    for column in ("parked_at", "last_error", "attempts"):
        op.drop_column("outbox", column)
    for column in ("compensation_base", "retry_base"):
        op.drop_column("saga_step", column)
    op.drop_index("ix_saga_parked_at", table_name="saga")
    op.drop_column("saga", "parked_at")
    op.drop_column("saga", "parked_reason")
