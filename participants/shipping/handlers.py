"""Create a shipment (not to unsupported countries); cancel it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.saga import messages
from participants.contracts import CONTRACTS
from participants.kit.participant import Participant, Result, refused, succeeded
from participants.shipping.tables import inbox, ledger, shipment

UNSUPPORTED_COUNTRIES = frozenset({"AQ"})
# A courier whose booking system is slow: the first attempt outlasts the step's deadline.
SLOW_LANE = "Slow Lane"
SLOW_LANE_DELAY_S = 11.0


async def create(conn: AsyncConnection, command: messages.Message) -> Result:
    address = command.payload["address"]
    if address["line1"].startswith(SLOW_LANE) and command.attempt == 1:
        await asyncio.sleep(SLOW_LANE_DELAY_S)
    if address["country"] in UNSUPPORTED_COUNTRIES:
        return refused(
            "unsupported_destination", f"we do not ship to country {address['country']}"
        )
    shipment_id = str(uuid.uuid4())
    await conn.execute(
        shipment.insert(),  # values as parameters: one compiled statement for every shipment
        {
            "id": shipment_id,
            "saga_id": command.saga_id,
            "order_id": command.payload["orderId"],
            "country": address["country"],
            "city": address["city"],
            "line1": address["line1"],
            "postal_code": address["postalCode"],
            "status": "created",
        },
    )
    return succeeded(shipmentId=shipment_id)


async def cancel(
    conn: AsyncConnection, command: messages.Message, applied: Mapping[str, Any]
) -> Result:
    await conn.execute(
        shipment.update()
        .where(shipment.c.id == applied["shipmentId"], shipment.c.status == "created")
        .values(status="cancelled")
    )
    return succeeded()


PARTICIPANT = Participant(
    name="shipping",
    migrations=Path(__file__).parent / "migrations",
    inbox=inbox,
    ledger=ledger,
    actions={"shipping.create": create},
    compensations={"shipping.cancel": cancel},
    contracts=CONTRACTS,
    reads={"shipping.create": 1},
)
