"""the kit's tables at version 2: the inbox's replies are purged after the retention

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 11:00:00
"""

from collections.abc import Sequence

from participants.kit.migrate import create_kit_inbox_index_v2, drop_kit_inbox_index_v2

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_kit_inbox_index_v2("car")


def downgrade() -> None:
    drop_kit_inbox_index_v2("car")
