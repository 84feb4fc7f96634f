"""car tables

The car participant's first revision. Until the participants had histories of their own,
the orchestrator's (revisions 0001-0010) created these tables: on such a database this
revision finds them and only records that the schema is at 0001.

Revision ID: 0001
Revises:
Create Date: 2026-11-30 06:15:00
"""

from collections.abc import Sequence

from alembic import op

from participants.kit.bookings import create_booking_table_v1
from participants.kit.migrate import create_kit_tables_v1, drop_kit_tables_v1

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_booking_table_v1("car", if_not_exists=True)
    create_kit_tables_v1("car", if_not_exists=True)


def downgrade() -> None:
    drop_kit_tables_v1("car")
    op.drop_table("booking", schema="car")
