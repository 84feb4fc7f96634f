"""The shipped participants by name."""

from __future__ import annotations

from decimal import Decimal

from orchestrator.settings import Settings
from participants.inventory import handlers as inventory
from participants.kit.participant import Participant
from participants.payment import handlers as payment
from participants.shipping import handlers as shipping

NAMES = ("inventory", "payment", "shipping")


def participant(name: str, settings: Settings) -> Participant:
    if name == "inventory":
        return inventory.PARTICIPANT
    if name == "payment":
        return payment.make_participant(Decimal(settings.payment_limit))
    if name == "shipping":
        return shipping.PARTICIPANT
    raise ValueError(f"unknown participant {name!r} (known: {', '.join(NAMES)})")
