"""charge statement descriptor (now: nothing)

This revision once added payment.charge.statement_descriptor. The payment participant's
tables moved to its own history (`participants migrate payment`), whose first revision
creates the column, or adds it where this revision never ran. The revision stays so that
databases already at it, or past it, keep their history.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 22:33:03.263234
"""

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
