"""The payload versions of the commands the shipped participants handle."""

from __future__ import annotations

from orchestrator.saga.contracts import REQUIRED, Contracts, PayloadSchema

_CHARGE_V1 = {
    "orderId": REQUIRED,
    "customerId": REQUIRED,
    "amount": REQUIRED,
    "currency": REQUIRED,
    "card": REQUIRED,
}
_SHIP_V1 = {"orderId": REQUIRED, "items": REQUIRED, "address": REQUIRED, "chargeId": None}

CONTRACTS = Contracts(
    PayloadSchema("payment.charge", 1, _CHARGE_V1),
    # v2: what the customer sees on the card statement
    PayloadSchema("payment.charge", 2, {**_CHARGE_V1, "statementDescriptor": "SAGA SHOP"}),
    PayloadSchema("shipping.create", 1, _SHIP_V1),
    # v2: gift wrapping, which this shipping service does not offer yet (it reads v1)
    PayloadSchema("shipping.create", 2, {**_SHIP_V1, "giftWrap": False}),
)
