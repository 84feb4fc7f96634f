"""Saga definitions as data: ordered steps, each with its command, compensation and policies."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.saga.errors import InvalidDefinitionError, UnknownSagaTypeError

Payload = dict[str, Any]
PayloadBuilder = Callable[[Mapping[str, Any], Mapping[str, Any]], Payload]
InputValidator = Callable[[Mapping[str, Any]], Payload]


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how fast an action or a compensation is tried again.

    The delay before attempt n+1 is initial_backoff_s * multiplier**(n-1), capped at
    max_backoff_s, spread by +/- jitter (a fraction) so that retries of many sagas do not
    arrive together.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidDefinitionError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise InvalidDefinitionError("backoff must satisfy 0 <= initial <= max")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise InvalidDefinitionError("multiplier must be >= 1 and jitter in [0, 1)")

    def backoff_s(self, attempt: int, seed: str) -> float:
        """The delay after failed attempt `attempt`; the jitter is derived from `seed`, so
        the same saga step always gets the same delay (replays stay deterministic)."""
        try:
            grown = self.initial_backoff_s * self.multiplier ** (attempt - 1)
        except OverflowError:  # a resolve is asked again without end: long past the cap
            grown = self.max_backoff_s
        base = min(grown, self.max_backoff_s)
        digest = hashlib.blake2b(f"{seed}:{attempt}".encode(), digest_size=4).digest()
        spread = int.from_bytes(digest) / 0xFFFFFFFF * 2 - 1
        return max(0.0, base * (1 + self.jitter * spread))


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
    compensation_timeout_s: float = 30.0
    compensation_retry: RetryPolicy = RetryPolicy(max_attempts=5)
    pivot: bool = False
    group: str | None = None
    command_version: int = 1

    @property
    def resolve_command(self) -> str:
        """Asks the participant whether the action took effect, and fences it if not."""
        return f"{self.participant}.resolve"

    @property
    def read_only(self) -> bool:
        """Declares no compensation and is not the pivot: leaves nothing to undo."""
        return self.compensation is None and not self.pivot


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

    def members(self, step: Step) -> list[Step]:
        """The steps sent together with `step`: its parallel group, or itself."""
        if step.group is None:
            return [step]
        return [s for s in self.steps if s.group == step.group]

    def validate(self, participants: Iterable[str] | None = None) -> None:
        if not self.steps:
            raise InvalidDefinitionError(f"saga {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidDefinitionError(f"saga {self.name!r} repeats step names {duplicates}")
        if sum(s.pivot for s in self.steps) > 1:
            raise InvalidDefinitionError(f"saga {self.name!r} has more than one pivot step")
        self._validate_groups()
        known = set(participants) if participants is not None else None
        for step in self.steps:
            if known is not None and step.participant not in known:
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r} names unknown participant "
                    f"{step.participant!r} (known: {sorted(known)})"
                )
            if (step.compensation is None) != (step.build_compensation is None):
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r} needs both a compensation "
                    "and its payload builder, or neither (a read-only step or the pivot)"
                )
            if step.command == step.resolve_command or step.compensation == step.resolve_command:
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r}: {step.resolve_command!r} is "
                    "the kit's own command"
                )

    def _validate_groups(self) -> None:
        closed: set[str] = set()
        previous: str | None = None
        for step in self.steps:
            if step.pivot and step.group is not None:
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r}: a pivot cannot be in a group"
                )
            if step.group != previous and previous is not None:
                closed.add(previous)
            if step.group in closed:
                raise InvalidDefinitionError(
                    f"saga {self.name!r}: the steps of group {step.group!r} must be adjacent"
                )
            previous = step.group
        for step in self.steps:
            if not step.name or step.timeout_s <= 0 or step.compensation_timeout_s <= 0:
                raise InvalidDefinitionError(
                    f"step {step.name!r} of saga {self.name!r} needs a name and positive timeouts"
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

    def all(self) -> list[SagaDefinition]:
        return [d for name in self.names() for _, d in sorted(self._definitions[name].items())]

    def participants(self) -> list[str]:
        """Every participant a registered definition sends commands to."""
        return sorted({step.participant for d in self.all() for step in d.steps})
