"""publish on commit: outbox rows no longer NOTIFY the relay

Each process publishes the rows it commits; the relay only recovers what was left, on its
interval, and needs no wake-up per transaction.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 04:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
    op.execute("DROP FUNCTION IF EXISTS saga_outbox_notify()")


def downgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION saga_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('saga_outbox', '');
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox "
        "FOR EACH STATEMENT EXECUTE FUNCTION saga_outbox_notify()"
    )
