"""a reply counts only when it answers the command last sent for its step: that command's id

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for steps sent before: their replies are matched by attempt, as they were
    op.add_column("saga_step", sa.Column("command_id", postgresql.UUID(), nullable=True))


def downgrade() -> None:
    op.drop_column("saga_step", "command_id")
