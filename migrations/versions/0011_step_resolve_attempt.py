"""steps whose outcome is unknown are resolved: the number of times the participant was asked

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "saga_step",
        sa.Column("resolve_attempt", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    # the operators' count and list of the sagas waiting on a resolve: few rows, read often
    op.create_index(
        "ix_saga_step_resolving",
        "saga_step",
        ["saga_id"],
        unique=False,
        postgresql_where=sa.text("status = 'resolving'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_saga_step_resolving",
        table_name="saga_step",
        postgresql_where=sa.text("status = 'resolving'"),
    )
    op.drop_column("saga_step", "resolve_attempt")
