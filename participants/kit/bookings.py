"""A participant that books something and cancels the booking: the shape of the trip
saga's flight, hotel and car services."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.saga import messages
from participants.kit.participant import Participant, Result, refused, succeeded
from participants.kit.tables import kit_tables

Refusal = Callable[[Mapping[str, Any]], tuple[str, str] | None]


def booking_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """(booking, inbox, step_ledger) in the participant's schema."""
    booking = sa.Table(
        "booking",
        metadata,
        sa.Column("id", pg.UUID(as_uuid=False), primary_key=True),
        sa.Column("saga_id", pg.UUID(as_uuid=False), nullable=False, unique=True),
        sa.Column("trip_id", sa.Text, nullable=False),
        sa.Column("details", pg.JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint("status IN ('booked', 'cancelled')", name="status_known"),
    )
    inbox, ledger = kit_tables(metadata)
    return booking, inbox, ledger


def booking_participant(
    name: str,
    booking: sa.Table,
    inbox: sa.Table,
    ledger: sa.Table,
    refuse: Refusal,
    migrations: Path | None = None,
) -> Participant:
    """Handles `<name>.book` and its compensation `<name>.cancel`."""

    async def book(conn: AsyncConnection, command: messages.Message) -> Result:
        refusal = refuse(command.payload)
        if refusal is not None:
            return refused(*refusal)
        booking_id = str(uuid.uuid4())
        await conn.execute(
            booking.insert().values(
                id=booking_id,
                saga_id=command.saga_id,
                trip_id=command.payload["tripId"],
                details=dict(command.payload),
                status="booked",
            )
        )
        return succeeded(**{f"{name}BookingId": booking_id})

    async def cancel(
        conn: AsyncConnection, command: messages.Message, applied: Mapping[str, Any]
    ) -> Result:
        await conn.execute(
            booking.update()
            .where(booking.c.id == applied[f"{name}BookingId"], booking.c.status == "booked")
            .values(status="cancelled")
        )
        return succeeded()

    return Participant(
        name=name,
        inbox=inbox,
        ledger=ledger,
        actions={f"{name}.book": book},
        compensations={f"{name}.cancel": cancel},
        migrations=migrations,
    )


def create_booking_table_v1(schema: str, *, if_not_exists: bool = False) -> None:
    """The booking table as a booking participant's first revision creates it. Frozen, as
    `participants.kit.migrate.create_kit_tables_v1` is."""
    op.create_table(
        "booking",
        sa.Column("id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("saga_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("trip_id", sa.Text(), nullable=False),
        sa.Column("details", pg.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('booked', 'cancelled')", name=op.f("ck_booking_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking")),
        sa.UniqueConstraint("saga_id", name=op.f("uq_booking_saga_id")),
        schema=schema,
        if_not_exists=if_not_exists,
    )
