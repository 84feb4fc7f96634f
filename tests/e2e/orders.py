"""Orders as a user writes them, and what a user checks of them."""

from __future__ import annotations

import uuid
from typing import Any

from tests.e2e.system import System, wait_for

DECLINED_CARD = "4000000000000002"


def order(
    sku: str, quantity: int = 2, card: str = "4242424242424242", country: str = "DE"
) -> dict[str, Any]:
    return {
        "orderId": f"o-{uuid.uuid4().hex[:8]}",
        "customerId": "c-1",
        "items": [{"sku": sku, "quantity": quantity}],
        "amount": "49.90",
        "currency": "EUR",
        "card": card,
        "shippingAddress": {
            "country": country,
            "city": "Berlin",
            "line1": "Main St 1",
            "postalCode": "10115",
        },
    }


def new_sku(system: System, quantity: int) -> str:
    sku = f"SKU-{uuid.uuid4().hex[:8].upper()}"
    system.restock(sku, quantity)
    return sku


def stock(system: System, sku: str) -> int:
    quantity: int = system.scalar("SELECT quantity FROM inventory.stock WHERE sku = %s", sku)
    return quantity


def journey(saga: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The steps' story from the timeline: what was sent, what failed, what was undone."""
    kinds = {"command_sent", "step_failed", "compensation_sent", "step_compensated"}
    return [(e["kind"], e["step"]) for e in saga["timeline"] if e["kind"] in kinds]


def wait_shipping_caught_up(system: System, saga: dict[str, Any]) -> None:
    """Wait until the shipping participant, back after a stop, answered the last command
    the saga sent it; check that the late create was applied, once."""
    last = [
        e["message_id"]
        for e in saga["timeline"]
        if e["kind"] in ("command_sent", "compensation_sent", "resolve_sent")
        and e["step"] == "create_shipment"
    ][-1]
    wait_for(
        lambda: system.scalar("SELECT 1 FROM shipping.inbox WHERE message_id = %s", last),
        60,
        "shipping to catch up",
    )
    shipments = system.scalar(
        "SELECT array_agg(status) FROM shipping.shipment WHERE saga_id = %s", saga["id"]
    )
    assert shipments == ["created"], "the late create was not applied once"
