"""What the conformance run sends: the step of a saga definition that names the participant,
and its payloads, built by the definition's own builders from an example saga input."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from orchestrator import input_schema, sealed
from orchestrator.example_inputs import EXAMPLE_INPUTS  # `--input` gives one for another saga
from orchestrator.saga.definition import DefinitionRegistry, Payload, SagaDefinition, Step
from orchestrator.saga.errors import InvalidSagaInputError, OrchestratorError


class NoSubjectError(OrchestratorError):
    """No saga definition with an example input sends commands to this participant."""


@dataclasses.dataclass(frozen=True)
class Subject:
    """One step of a saga, as the orchestrator would drive it at the participant."""

    participant: str
    definition: SagaDefinition
    step: Step
    saga_input: Mapping[str, Any]  # validated, sensitive fields in clear

    @property
    def action(self) -> str:
        return self.step.command

    @property
    def compensation(self) -> str | None:
        return self.step.compensation

    @property
    def resolve(self) -> str:
        return self.step.resolve_command

    def action_payload(self, saga_id: str, ring: sealed.KeyRing) -> Payload:
        return self.step.build(self._sealed_input(saga_id, ring), {})

    def compensation_payload(
        self, saga_id: str, ring: sealed.KeyRing, context: Mapping[str, Any]
    ) -> Payload:
        """Built, as the orchestrator builds it, from what the action's reply returned."""
        assert self.step.build_compensation is not None, "only for a step with a compensation"
        return self.step.build_compensation(self._sealed_input(saga_id, ring), context)

    def _sealed_input(self, saga_id: str, ring: sealed.KeyRing) -> dict[str, Any]:
        """Sensitive fields sealed for their reader where a data key is at hand, as the
        orchestrator stores them; in clear otherwise."""
        found = dict(self.saga_input)
        for field in input_schema.sensitive_fields(self.definition.validate_input):
            value = found.get(field.path)
            if isinstance(value, str) and ring.key_id_for(field.reader) is not None:
                found[field.path] = ring.seal(value, field.reader, saga_id, field.path)
        return found


def _valid(definition: SagaDefinition, saga_input: Mapping[str, Any]) -> Payload:
    try:
        return definition.validate_input(saga_input)
    except InvalidSagaInputError as exc:
        problems = "; ".join(f"{p.get('field')}: {p.get('problem')}" for p in exc.problems)
        raise InvalidSagaInputError(exc.problems, f"{exc.message}: {problems}") from None


def subject(
    registry: DefinitionRegistry,
    participant: str,
    saga_type: str | None = None,
    saga_input: Mapping[str, Any] | None = None,
) -> Subject:
    """The first step (by saga name, then version) that names the participant, of a saga
    with an example input, or of `saga_type` with `saga_input`."""
    for definition in registry.all():
        if saga_type is not None and definition.name != saga_type:
            continue
        example = saga_input if saga_input is not None else EXAMPLE_INPUTS.get(definition.name)
        step = next((s for s in definition.steps if s.participant == participant), None)
        if step is None or example is None:
            continue
        return Subject(participant, definition, step, _valid(definition, example))
    which = f"saga {saga_type!r}" if saga_type else "any saga with an example input"
    raise NoSubjectError(
        f"no step of {which} sends commands to {participant!r}: name the saga (--saga) and "
        "give a valid input of it (--input FILE)"
    )
