from __future__ import annotations

from participants.kit.bookings import booking_tables
from participants.kit.tables import participant_metadata

SCHEMA = "flight"
metadata = participant_metadata(SCHEMA)
booking, inbox, ledger = booking_tables(metadata)
