"""trip participants: flight, hotel, car (now: nothing)

This revision once created the flight, hotel and car participants' schemas and tables;
they moved to those participants' own histories (`participants migrate NAME`), whose first
revisions adopt the tables this revision created on existing databases. The revision stays
so that databases already at it, or past it, keep their history.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 21:52:07.268389
"""

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
