"""A valid input of each shipped saga: the api's example request, the published contracts'
examples, and the payloads the conformance kit sends are all built from these."""

from __future__ import annotations

from typing import Any

EXAMPLE_INPUTS: dict[str, dict[str, Any]] = {
    "order": {
        "orderId": "o-1",
        "customerId": "c-1",
        "items": [{"sku": "SKU-RED", "quantity": 2}],
        "amount": "49.90",
        "currency": "EUR",
        "card": "4242424242424242",
        "shippingAddress": {
            "country": "DE",
            "city": "Berlin",
            "line1": "Main St 1",
            "postalCode": "10115",
        },
    },
    "trip": {
        "tripId": "t-1",
        "traveller": "Ada Lovelace",
        "flight": {"from": "BER", "to": "LIS", "date": "2027-05-01"},
        "hotel": {"city": "Lisbon", "checkIn": "2027-05-01", "nights": 3},
        "car": {"city": "Lisbon", "days": 3},
    },
}
