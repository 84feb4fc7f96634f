"""Saga definitions as data: ordered steps, each with its command, compensation and policies."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.saga.errors import InvalidDefinitionError, UnknownSagaTypeError

Payload = dict[str, Any]
PayloadBuilder = Callable[[Mapping[str, Any], Mapping[str, Any]], Payload]
InputValidator = Callable[[Mapping[str, Any]], Payload]


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidDefinitionError("max_attempts must be at least 1")


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One local transaction of a saga.

    `build` and `build_compensation` turn the saga input and the context gathered so far into
    the command's payload; they must be pure.
    """

    name: str
    participant: str
    command: str
    build: PayloadBuilder
    compensation: str | None = None
    build_compensation: PayloadBuilder | None = None
    timeout_s: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    compensation_retry: RetryPolicy = RetryPolicy(max_attempts=5)
    pivot: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class SagaDefinition:
    name: str
    version: int
    steps: tuple[Step, ...]
    validate_input: InputValidator

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def pivot_index(self) -> int | None:
        return next((i for i, s in enumerate(self.steps) if s.pivot), None)

    def validate(self, participants: Iterable[str] | None = None) -> None:
        if not self.steps:
            raise InvalidDefinitionError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidDefinitionError(f"saga {self.name!r} repeats step names {duplicates}")
        if sum(s.pivot for s in self.steps) > 1:
            raise InvalidDefinitionError(f"saga {self.name!r} has more than one pivot step")
        known = set(participants) if participants is not None else None
        last_compensable = self.pivot_index if self.pivot_index is not None else len(self.steps)
        for index, step in enumerate(self.steps):
            if known is not None and step.participant not in known:
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r} names unknown participant "
                    f"{step.participant!r} (known: {sorted(known)})"
                )
            if index < last_compensable and not (step.compensation and step.build_compensation):
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r} runs before the pivot "
                    "and needs a compensation"
                )


class DefinitionRegistry:
    """The saga definitions a process knows, by name and version."""

    def __init__(self, participants: Iterable[str] | None = None) -> None:
        self._participants = list(participants) if participants is not None else None
        self._definitions: dict[str, dict[int, SagaDefinition]] = {}

    def register(self, definition: SagaDefinition) -> None:
        definition.validate(self._participants)
        versions = self._definitions.setdefault(definition.name, {})
        if definition.version in versions:
            raise InvalidDefinitionError(
                f"saga {definition.name!r} version {definition.version} is already registered"
            )
        versions[definition.version] = definition

    def get(self, name: str, version: int | None = None) -> SagaDefinition:
        versions = self._definitions.get(name)
        if not versions:
            known = ", ".join(sorted(self._definitions)) or "none"
            raise UnknownSagaTypeError(f"unknown saga type {name!r} (known: {known})")
        if version is None:
            return versions[max(versions)]
        try:
            return versions[version]
        except KeyError:
            raise UnknownSagaTypeError(
                f"saga type {name!r} has no version {version} (known: {sorted(versions)})"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._definitions)
