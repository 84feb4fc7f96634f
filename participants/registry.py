"""Where participants come from, found the way saga definitions are:

- the ones this project ships: every subpackage of `participants` (but the kit) with a
  `handlers` module;
- those installed packages declare under the entry-point group
  `saga_orchestrator.participants` (the entry point's name is the participant's);
- the modules named in SAGA_PARTICIPANT_MODULES (comma-separated).

Each module defines PARTICIPANT, a Participant, or make_participant(settings) returning one.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from importlib import metadata

import participants
from orchestrator.settings import Settings
from participants.kit.participant import Participant

ENTRY_POINT_GROUP = "saga_orchestrator.participants"


class UnknownParticipantError(ValueError):
    """No participant of that name is shipped, installed or named in the settings."""


def shipped() -> dict[str, str]:
    return {
        m.name: f"participants.{m.name}.handlers"
        for m in pkgutil.iter_modules(participants.__path__)
        if m.ispkg
        and m.name != "kit"
        and importlib.util.find_spec(f"participants.{m.name}.handlers") is not None
    }


def installed() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def modules(settings: Settings) -> dict[str, str]:
    """Every participant this process can run, by name, and the module defining it."""
    found = {**shipped(), **installed()}
    for module_name in settings.participant_module_names:
        found.setdefault(_load(module_name, settings).name, module_name)
    return dict(sorted(found.items()))


def names(settings: Settings) -> list[str]:
    return list(modules(settings))


def shipped_names() -> list[str]:
    """The participants this project ships (the demo's and the tests')."""
    return sorted(shipped())


def participant(name: str, settings: Settings) -> Participant:
    found = modules(settings)
    if name not in found:
        raise UnknownParticipantError(
            f"unknown participant {name!r} (known: {', '.join(found) or 'none'}); "
            f"install a package declaring it under the entry-point group {ENTRY_POINT_GROUP!r} "
            "or name its module in SAGA_PARTICIPANT_MODULES"
        )
    loaded = _load(found[name], settings)
    if loaded.name != name:
        raise UnknownParticipantError(
            f"module {found[name]!r} registered as {name!r} defines participant {loaded.name!r}"
        )
    return loaded


def _load(module_name: str, settings: Settings) -> Participant:
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would: the user's own modules
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownParticipantError(
            f"cannot import participant module {module_name!r}: {exc}"
        ) from None
    make = getattr(module, "make_participant", None)
    found = make(settings) if callable(make) else getattr(module, "PARTICIPANT", None)
    if not isinstance(found, Participant):
        raise UnknownParticipantError(
            f"module {module_name!r} must define PARTICIPANT, a Participant, "
            "or make_participant(settings) returning one"
        )
    return found
