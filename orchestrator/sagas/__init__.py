"""Saga definitions: the built-in ones in this package, those that installed packages
declare under the entry-point group `saga_orchestrator.definitions`, and the modules named
in SAGA_DEFINITIONS. Each module exposes `DEFINITIONS`, a sequence of SagaDefinition."""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Iterable, Sequence
from importlib import metadata

from orchestrator.saga.definition import DefinitionRegistry, SagaDefinition
from orchestrator.saga.errors import InvalidDefinitionError

ENTRY_POINT_GROUP = "saga_orchestrator.definitions"


def builtin_modules() -> list[str]:
    return [f"{__name__}.{m.name}" for m in pkgutil.iter_modules(__path__)]


def entry_point_modules() -> list[str]:
    return [ep.value for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)]


def load_definitions(module_name: str) -> list[SagaDefinition]:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidDefinitionError(
            f"cannot import saga definitions from {module_name!r}: {exc}"
        ) from None
    definitions = getattr(module, "DEFINITIONS", None)
    if definitions is None or not all(isinstance(d, SagaDefinition) for d in definitions):
        raise InvalidDefinitionError(
            f"module {module_name!r} must define DEFINITIONS, a sequence of SagaDefinition"
        )
    return list(definitions)


def build_registry(
    extra_modules: Sequence[str] = (), participants: Iterable[str] | None = None
) -> DefinitionRegistry:
    registry = DefinitionRegistry(participants)
    if extra_modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # as `python -m` would: the user's own modules
    modules = dict.fromkeys([*builtin_modules(), *entry_point_modules(), *extra_modules])
    for module_name in modules:
        for definition in load_definitions(module_name):
            registry.register(definition)
    return registry
