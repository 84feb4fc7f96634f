"""Charge a card (declining the test card and amounts over the limit); refund a charge."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator import sealed
from orchestrator.saga import messages
from orchestrator.settings import Settings
from participants.contracts import CONTRACTS
from participants.kit.participant import Participant, Result, refused, succeeded
from participants.payment.tables import charge, inbox, ledger, refund

DECLINED_CARD = "4000000000000002"
# Like a provider's "processing error" test card: a transient failure, twice, then success.
FLAKY_CARD = "4000000000000119"
FLAKY_ATTEMPTS = 2


def make_participant(settings: Settings) -> Participant:
    limit = Decimal(settings.payment_limit)
    keys = sealed.key_ring(settings)

    async def charge_card(conn: AsyncConnection, command: messages.Message) -> Result:
        p = command.payload
        amount = Decimal(str(p["amount"]))
        try:
            card = _card(keys, command)
        except sealed.SealedFieldError as exc:
            return refused("card_unreadable", exc.message)
        if card == DECLINED_CARD:
            return refused("card_declined", "the card was declined")
        if card == FLAKY_CARD and command.attempt <= FLAKY_ATTEMPTS:
            return Result(
                messages.Outcome.RETRYABLE,
                error_code="processing_error",
                error_message=f"the card network did not answer (attempt {command.attempt})",
            )
        if amount > limit:
            return refused("amount_over_limit", f"{amount} is above the limit of {limit}")
        charge_id = str(uuid.uuid4())
        await conn.execute(
            charge.insert(),  # values as parameters: one compiled statement for every charge
            {
                "id": charge_id,
                "saga_id": command.saga_id,
                "order_id": p["orderId"],
                "customer_id": p["customerId"],
                "amount": amount,
                "currency": p["currency"],
                "card_last4": card[-4:],
                "statement_descriptor": p["statementDescriptor"],
                "status": "captured",
            },
        )
        return succeeded(chargeId=charge_id)

    async def refund_charge(
        conn: AsyncConnection, command: messages.Message, applied: Mapping[str, Any]
    ) -> Result:
        captured = (
            await conn.execute(
                charge.update()
                .where(charge.c.id == applied["chargeId"], charge.c.status == "captured")
                .values(status="refunded")
                .returning(charge.c.id, charge.c.amount)
            )
        ).first()
        if captured is not None:
            await conn.execute(
                refund.insert().values(
                    id=str(uuid.uuid4()), charge_id=captured.id, amount=captured.amount
                )
            )
        return succeeded()

    return Participant(
        name="payment",
        inbox=inbox,
        ledger=ledger,
        actions={"payment.charge": charge_card},
        compensations={"payment.refund": refund_charge},
        contracts=CONTRACTS,
        reads={"payment.charge": 2},
        migrations=Path(__file__).parent / "migrations",
    )


def _card(keys: sealed.KeyRing, command: messages.Message) -> str:
    card = command.payload["card"]
    # a clear string: a command sent before cards were sealed
    return card if isinstance(card, str) else keys.open(card, command.saga_id, "card")


async def net_charged(conn: AsyncConnection) -> Decimal:
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(charge.c.amount), 0)).where(
            charge.c.status == "captured"
        )
    )
    return Decimal(total or 0)
