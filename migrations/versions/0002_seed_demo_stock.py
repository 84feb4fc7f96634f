"""seed stock for the demo SKUs (now: nothing)

This revision once inserted stock for SKU-RED and SKU-BLUE into inventory.stock. The
inventory participant's tables moved to its own history (`participants migrate inventory`)
and the demo stock to the demo, which sets it with `participants inventory restock`. The
revision stays so that databases already at it, or past it, keep their history.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
