"""Reserve stock for every item of an order, or none; release a reservation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.saga import messages
from participants.inventory.tables import inbox, ledger, reservation, stock
from participants.kit.participant import Participant, Result, refused, succeeded

# Built once, with parameters: a statement built per call costs as much again as running it.
_LOCK_STOCK = (
    sa.select(stock.c.sku, stock.c.quantity)
    .where(stock.c.sku.in_(sa.bindparam("skus", expanding=True)))
    .order_by(stock.c.sku)
    .with_for_update()
)
_TAKE_STOCK = (
    stock.update()
    .where(stock.c.sku == sa.bindparam("sku_"))
    .values(quantity=stock.c.quantity - sa.bindparam("taken"), updated_at=sa.func.now())
)


_RESERVED_SKUS = sa.select(reservation.c.sku).where(
    reservation.c.saga_id == sa.bindparam("saga_id"), reservation.c.status == "reserved"
)


async def stock_rows(conn: AsyncConnection, command: messages.Message) -> list[str]:
    """The stock rows a command will lock: its order's products, or those of the
    reservation it releases."""
    if command.message_type == "inventory.reserve":
        items = command.payload.get("items")
        if not isinstance(items, list):
            return []  # the handler refuses it
        return [f"stock:{i['sku']}" for i in items if isinstance(i, dict) and "sku" in i]
    if command.message_type == "inventory.release":
        rows = await conn.execute(_RESERVED_SKUS, {"saga_id": command.saga_id})
        return [f"stock:{sku}" for sku in rows.scalars()]
    return []


async def reserve(conn: AsyncConnection, command: messages.Message) -> Result:
    wanted: Counter[str] = Counter()
    for item in command.payload["items"]:
        wanted[item["sku"]] += int(item["quantity"])
    skus = sorted(wanted)  # lock rows in one order everywhere: no deadlocks
    rows = await conn.execute(_LOCK_STOCK, {"skus": skus})
    available = {r.sku: r.quantity for r in rows}
    for sku in skus:
        if sku not in available:
            return refused("unknown_sku", f"no stock is kept for {sku}")
        if available[sku] < wanted[sku]:
            return refused(
                "insufficient_stock", f"{sku}: {wanted[sku]} wanted, {available[sku]} in stock"
            )
    await conn.execute(_TAKE_STOCK, [{"sku_": sku, "taken": wanted[sku]} for sku in skus])
    await conn.execute(
        reservation.insert(),
        [
            {
                "saga_id": command.saga_id,
                "sku": sku,
                "order_id": command.payload["orderId"],
                "quantity": wanted[sku],
                "status": "reserved",
            }
            for sku in skus
        ],
    )
    return succeeded(reservationId=command.saga_id)


async def release(
    conn: AsyncConnection, command: messages.Message, applied: Mapping[str, Any]
) -> Result:
    held = await conn.execute(
        reservation.update()
        .where(
            reservation.c.saga_id == applied["reservationId"],
            reservation.c.status == "reserved",
        )
        .values(status="released")
        .returning(reservation.c.sku, reservation.c.quantity)
    )
    for sku, quantity in sorted(held.all()):
        await conn.execute(
            stock.update()
            .where(stock.c.sku == sku)
            .values(quantity=stock.c.quantity + quantity, updated_at=sa.func.now())
        )
    return succeeded()


async def restock(conn: AsyncConnection, sku: str, quantity: int) -> None:
    stmt = insert(stock).values(sku=sku, quantity=quantity)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[stock.c.sku], set_={"quantity": quantity, "updated_at": sa.func.now()}
        )
    )


PARTICIPANT = Participant(
    name="inventory",
    migrations=Path(__file__).parent / "migrations",
    inbox=inbox,
    ledger=ledger,
    actions={"inventory.reserve": reserve},
    compensations={"inventory.release": release},
    locks=stock_rows,
)
