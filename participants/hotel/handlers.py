"""Books a room; stays longer than 30 nights are refused."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from participants.hotel.tables import booking, inbox, ledger
from participants.kit.bookings import booking_participant

MAX_NIGHTS = 30


def refuse(payload: Mapping[str, Any]) -> tuple[str, str] | None:
    if payload["nights"] > MAX_NIGHTS:
        return "stay_too_long", f"{payload['nights']} nights is more than {MAX_NIGHTS}"
    return None


PARTICIPANT = booking_participant(
    "hotel", booking, inbox, ledger, refuse, migrations=Path(__file__).parent / "migrations"
)
