"""saga wake time for durable timers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 21:48:40.788692
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("saga", sa.Column("wake_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_saga_wake_at",
        "saga",
        ["wake_at"],
        unique=False,
        postgresql_where=sa.text("wake_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_saga_wake_at", table_name="saga", postgresql_where=sa.text("wake_at IS NOT NULL")
    )
    op.drop_column("saga", "wake_at")
