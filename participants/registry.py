"""The participants this project ships, found by convention: every subpackage of
`participants` (but the kit) with a `handlers` module defining PARTICIPANT or
make_participant(settings). A new participant needs no change here."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

import participants
from orchestrator.settings import Settings
from participants.kit.participant import Participant


def names() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(participants.__path__)
        if m.ispkg
        and m.name != "kit"
        and importlib.util.find_spec(f"participants.{m.name}.handlers") is not None
    )


def participant(name: str, settings: Settings) -> Participant:
    if name not in names():
        raise ValueError(f"unknown participant {name!r} (known: {', '.join(names())})")
    handlers = importlib.import_module(f"participants.{name}.handlers")
    make = getattr(handlers, "make_participant", None)
    result: Participant = make(settings) if make else handlers.PARTICIPANT
    return result


def table_modules() -> list[str]:
    """The modules holding each participant's tables, for the migrations."""
    return [f"participants.{name}.tables" for name in names()]
