"""Example messages for the contracts, taken from the published sagas run in memory on
example inputs, so that every example is what the code really writes."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from orchestrator import codec, input_schema, payload_schemas, sealed
from orchestrator.example_inputs import EXAMPLE_INPUTS
from orchestrator.saga import messages
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.definition import SagaDefinition, Step
from orchestrator.testing import SagaHarness, Scripted


class _RecordingHarness(SagaHarness):
    """Keeps the replies its scripted participants give."""

    def __init__(self, definition: SagaDefinition) -> None:
        super().__init__(definition)
        self.replies: list[messages.Message] = []

    def deliver(self, reply: messages.Message) -> None:
        self.replies.append(reply)
        super().deliver(reply)


def _runs(
    definition: SagaDefinition, saga_input: Mapping[str, Any]
) -> Iterable[_RecordingHarness]:
    """A saga that completes; one whose last step fails, so it compensates; one whose
    compensation never succeeds, so it fails; for each step, one aborted while the step's
    reply is lost, so it resolves that step and compensates it."""
    first, last = definition.steps[0], definition.steps[-1].name
    failures: list[Scripted] = ["failure"] * first.compensation_retry.max_attempts
    plans: list[tuple[str | None, dict[str, list[Scripted]], dict[str, list[Scripted]]]] = [
        (None, {}, {}),
        (None, {last: ["failure"]}, {}),
        (None, {last: ["failure"]}, {first.name: failures}),
    ]
    lost_reply: list[Scripted] = ["lost_reply"]
    plans += [(step.name, {step.name: lost_reply}, {}) for step in definition.steps]
    for lost, actions, compensations in plans:
        harness = _RecordingHarness(definition)
        for step in definition.steps:
            harness.script(step.name, data=_result(step))
        for step_name, outcomes in actions.items():
            harness.script(step_name, *outcomes)
        for step_name, outcomes in compensations.items():
            harness.script_compensation(step_name, *outcomes)
        harness.start(saga_input)
        if lost is not None:
            harness.run(until=_applied(lost))
            harness.abort("an example of a resolve")
        harness.run()
        yield harness


def _result(step: Step) -> dict[str, str]:
    """What the step's action answers: the context its compensation reads (a new id each)."""
    if step.build_compensation is None:
        return {}
    return {
        key: messages.new_id() for key in payload_schemas.context_reads(step.build_compensation)
    }


def _applied(step: str) -> Callable[[SagaHarness], bool]:
    return lambda harness: harness.actions_applied[step] > 0


def examples(definitions: Sequence[SagaDefinition], contracts: Contracts) -> dict[str, Any]:
    """One example record value per message name, from sagas run in memory, its ids
    renumbered so that the same code gives the same examples."""
    seen: dict[str, messages.Message] = {}
    for definition in definitions:
        saga_input = EXAMPLE_INPUTS.get(definition.name)
        if saga_input is None:
            continue
        for harness in _runs(definition, saga_input):
            for message in [*harness.commands, *harness.events, *harness.replies]:
                seen.setdefault(f"{message.message_type}.v{message.version}", message)
    for message in list(seen.values()):
        for version in contracts.versions(message.message_type):
            upcast = contracts.read(message, version)
            seen.setdefault(f"{message.message_type}.v{version}", upcast)
    stable = _Stable(_sealed_examples(definitions))
    return {name: stable(codec.to_dict(m)) for name, m in sorted(seen.items())}


def _sealed_examples(definitions: Sequence[SagaDefinition]) -> dict[str, dict[str, str]]:
    """The example inputs' sensitive values, each as its sealed form on the wire."""
    found = {}
    for definition in definitions:
        saga_input = EXAMPLE_INPUTS.get(definition.name, {})
        for field in input_schema.sensitive_fields(definition.validate_input):
            clear = saga_input.get(field.path)
            if isinstance(clear, str):
                ct = base64.b64encode(hashlib.sha256(clear.encode()).digest()).decode()
                found[clear] = {"enc": "k1", "ct": ct, "mask": sealed.mask(clear)}
    return found


@dataclasses.dataclass
class _Stable:
    """Rewrites a record value so that it is the same on every run: random ids numbered in
    the order they appear, sensitive values sealed with a fixed ciphertext."""

    sealed_values: Mapping[str, dict[str, str]]
    renumbered: dict[str, str] = dataclasses.field(default_factory=dict)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, str) and value in self.sealed_values:
            return self.sealed_values[value]
        if isinstance(value, str) and _is_uuid(value) and not value.startswith("00000000-"):
            number = len(self.renumbered) + 1
            return self.renumbered.setdefault(value, f"00000000-0000-4000-8000-{number:012d}")
        return value


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
