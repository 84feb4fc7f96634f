"""Rents a car; there is no rental desk in Atlantis."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from participants.car.tables import booking, inbox, ledger
from participants.kit.bookings import booking_participant

NO_DESK = frozenset({"Atlantis"})


def refuse(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    if payload["city"] in NO_DESK:
        return "no_rental_desk", f"no cars to rent in {payload['city']}"
    return None


PARTICIPANT = booking_participant(
    "car", booking, inbox, ledger, refuse, migrations=Path(__file__).parent / "migrations"
)
