"""Books a seat; flights to ZZZ are always full."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from participants.flight.tables import booking, inbox, ledger
from participants.kit.bookings import booking_participant

FULL_DESTINATIONS = frozenset({"ZZZ"})


def refuse(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    if payload["to"] in FULL_DESTINATIONS:
        return "no_seats", f"every flight to {payload['to']} is full"
    return None


PARTICIPANT = booking_participant(
    "flight", booking, inbox, ledger, refuse, migrations=Path(__file__).parent / "migrations"
)
