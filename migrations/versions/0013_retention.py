"""processed replies are forgotten after the topics' retention: a BRIN index finds the old ones

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Rows arrive in time order: a BRIN index is a few pages, and costs the inserts nothing
    # a B-tree would.
    op.create_index(
        "ix_processed_message_processed_at",
        "processed_message",
        ["processed_at"],
        postgresql_using="brin",
    )


def downgrade() -> None:
    op.drop_index("ix_processed_message_processed_at", table_name="processed_message")
