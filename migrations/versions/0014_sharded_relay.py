"""the outbox relay is sharded: a lease per shard, and the relays alive that share them

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The shards of the outbox as this revision seeds them (OUTBOX_SHARDS then).
SHARDS = 16


def upgrade() -> None:
    op.drop_constraint(
        op.f("ck_outbox_relay_lease_single_row"), "outbox_relay_lease", type_="check"
    )
    # The single lease becomes shard 1's, held as it was; the others start expired.
    op.execute(
        "INSERT INTO outbox_relay_lease (id, owner, expires_at) "
        f"SELECT shard, '', now() FROM generate_series(0, {SHARDS - 1}) AS shard "
        "ON CONFLICT (id) DO NOTHING"
    )
    op.create_table(
        "outbox_relay_member",
        sa.Column("owner", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("owner", name=op.f("pk_outbox_relay_member")),
    )


def downgrade() -> None:
    op.drop_table("outbox_relay_member")
    op.execute("DELETE FROM outbox_relay_lease WHERE id <> 1")
    op.execute(
        "INSERT INTO outbox_relay_lease (id, owner, expires_at) VALUES (1, '', now()) "
        "ON CONFLICT (id) DO NOTHING"
    )
    op.create_check_constraint(
        op.f("ck_outbox_relay_lease_single_row"), "outbox_relay_lease", "id = 1"
    )
