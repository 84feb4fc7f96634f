"""charge statement descriptor

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 22:33:03.263234
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "charge", sa.Column("statement_descriptor", sa.Text(), nullable=True), schema="payment"
    )


def downgrade() -> None:
    op.drop_column("charge", "statement_descriptor", schema="payment")
