"""idempotency request hash and listing indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 22:00:32.365471
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("saga", sa.Column("request_hash", sa.Text(), nullable=True))
    op.create_index(
        op.f("ix_saga_status_created_at_id"), "saga", ["status", "created_at", "id"], unique=False
    )
    op.create_index(
        op.f("ix_saga_type_created_at_id"), "saga", ["type", "created_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_saga_type_created_at_id"), table_name="saga")
    op.drop_index(op.f("ix_saga_status_created_at_id"), table_name="saga")
    op.drop_column("saga", "request_hash")
