"""The saga aggregate and its decisions: (state, event) -> (new state, messages, timeline).

Every function here is pure: time comes in as an argument, nothing is read or written
outside the objects passed in and returned.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from orchestrator.saga import messages
from orchestrator.saga.definition import SagaDefinition, Step
from orchestrator.saga.machine import (
    SagaMachine,
    SagaStatus,
    StepMachine,
    StepStatus,
    transition,
)

EVENTS_CHANNEL = "events"


@dataclasses.dataclass(slots=True)
class StepState:
    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    compensation_attempt: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def move(self, event: str) -> None:
        self.status = StepStatus(transition(StepMachine, self.status, event))


@dataclasses.dataclass(slots=True)
class Saga:
    id: str
    type: str
    definition_version: int
    status: SagaStatus
    input: dict[str, Any]
    context: dict[str, Any]
    steps: dict[str, StepState]
    version: int = 0

    def move(self, event: str) -> None:
        self.status = SagaStatus(transition(SagaMachine, self.status, event))


@dataclasses.dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: `channel` is a participant's name or EVENTS_CHANNEL."""

    channel: str
    message: messages.Message


@dataclasses.dataclass(frozen=True, slots=True)
class TimelineEntry:
    kind: str
    step: str | None = None
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    message_id: str | None = None


@dataclasses.dataclass(slots=True)
class Decision:
    saga: Saga
    outgoing: list[Outgoing] = dataclasses.field(default_factory=list)
    timeline: list[TimelineEntry] = dataclasses.field(default_factory=list)


def start(
    definition: SagaDefinition, saga_id: str, saga_input: Mapping[str, Any], now: datetime
) -> Decision:
    saga = Saga(
        id=saga_id,
        type=definition.name,
        definition_version=definition.version,
        status=SagaStatus.RUNNING,
        input=dict(saga_input),
        context={},
        steps={s.name: StepState(s.name) for s in definition.steps},
    )
    decision = Decision(saga)
    decision.timeline.append(TimelineEntry("saga_started", detail={"version": definition.version}))
    _emit_event(decision, "saga.started", now, None, {"input": saga.input})
    _advance(decision, definition, now, causation_id=None)
    return decision


def handle_reply(
    saga: Saga, definition: SagaDefinition, reply: messages.Message, now: datetime
) -> Decision:
    decision = Decision(copy.deepcopy(saga))
    state = decision.saga.steps.get(reply.step)
    step = _find_step(definition, reply.step)
    if state is None or step is None:
        return _ignore(decision, reply, "the saga has no such step")
    if reply.replied_command_type == step.command:
        _handle_action_reply(decision, definition, step, state, reply, now)
    elif reply.replied_command_type == step.compensation:
        _handle_compensation_reply(decision, definition, step, state, reply, now)
    else:
        _ignore(decision, reply, f"{reply.message_type!r} answers no command of this step")
    return decision


def _handle_action_reply(
    decision: Decision,
    definition: SagaDefinition,
    step: Step,
    state: StepState,
    reply: messages.Message,
    now: datetime,
) -> None:
    if state.status is not StepStatus.SENT or reply.attempt != state.attempt:
        _ignore(decision, reply, f"step is {state.status.value} at attempt {state.attempt}")
        return
    _record_reply(decision, reply)
    outcome = reply.outcome
    if outcome is messages.Outcome.RETRYABLE and state.attempt < step.retry.max_attempts:
        _dispatch(decision, step, state, now, reply.message_id)
        return
    if outcome is messages.Outcome.SUCCESS:
        state.move("succeed")
        state.result = dict(reply.data)
        state.error = None
        decision.saga.context.update(reply.data)
        decision.timeline.append(TimelineEntry("step_succeeded", step.name))
        _advance(decision, definition, now, reply.message_id)
        return
    state.move("fail")
    state.error = dict(reply.error)
    decision.timeline.append(TimelineEntry("step_failed", step.name, detail=state.error))
    _start_compensation(decision, definition, now, reply.message_id, reason=state.error)


def _handle_compensation_reply(
    decision: Decision,
    definition: SagaDefinition,
    step: Step,
    state: StepState,
    reply: messages.Message,
    now: datetime,
) -> None:
    if state.status is not StepStatus.COMPENSATING or reply.attempt != state.compensation_attempt:
        _ignore(decision, reply, f"step is {state.status.value}, not awaiting this compensation")
        return
    _record_reply(decision, reply)
    if reply.outcome is messages.Outcome.SUCCESS:
        state.move("finish_compensation")
        decision.timeline.append(TimelineEntry("step_compensated", step.name))
        _compensate_next(decision, definition, now, reply.message_id)
        return
    state.error = dict(reply.error)
    if state.compensation_attempt < step.compensation_retry.max_attempts:
        _dispatch_compensation(decision, step, state, now, reply.message_id)
        return
    decision.saga.move("fail")
    reason = {"step": step.name, "error": state.error, "cause": "compensation retries exhausted"}
    decision.timeline.append(TimelineEntry("saga_failed", step.name, detail=reason))
    _emit_event(decision, "saga.failed", now, reply.message_id, reason)


def _advance(
    decision: Decision, definition: SagaDefinition, now: datetime, causation_id: str | None
) -> None:
    saga = decision.saga
    for step in definition.steps:
        state = saga.steps[step.name]
        if state.status is StepStatus.PENDING:
            _dispatch(decision, step, state, now, causation_id)
            return
    saga.move("complete")
    decision.timeline.append(TimelineEntry("saga_completed"))
    _emit_event(decision, "saga.completed", now, causation_id, {"context": saga.context})


def _start_compensation(
    decision: Decision,
    definition: SagaDefinition,
    now: datetime,
    causation_id: str | None,
    reason: Mapping[str, Any],
) -> None:
    decision.saga.move("compensate")
    decision.timeline.append(TimelineEntry("saga_compensating", detail=dict(reason)))
    _compensate_next(decision, definition, now, causation_id)


def _compensate_next(
    decision: Decision, definition: SagaDefinition, now: datetime, causation_id: str | None
) -> None:
    """Compensate the latest step that succeeded, or finish: compensations run in reverse."""
    saga = decision.saga
    for step in reversed(definition.steps):
        state = saga.steps[step.name]
        if state.status in (StepStatus.SUCCEEDED, StepStatus.TIMED_OUT) and step.compensation:
            _dispatch_compensation(decision, step, state, now, causation_id)
            return
    saga.move("finish_compensation")
    decision.timeline.append(TimelineEntry("saga_compensated"))
    _emit_event(decision, "saga.compensated", now, causation_id, {})


def _dispatch(
    decision: Decision, step: Step, state: StepState, now: datetime, causation_id: str | None
) -> None:
    saga = decision.saga
    state.move("dispatch")
    state.attempt += 1
    message = messages.command(
        message_type=step.command,
        saga_id=saga.id,
        saga_type=saga.type,
        step=step.name,
        attempt=state.attempt,
        payload=step.build(saga.input, saga.context),
        now=now,
        causation_id=causation_id,
    )
    decision.outgoing.append(Outgoing(step.participant, message))
    decision.timeline.append(
        TimelineEntry(
            "command_sent",
            step.name,
            detail={"command": step.command, "attempt": state.attempt},
            message_id=message.message_id,
        )
    )


def _dispatch_compensation(
    decision: Decision, step: Step, state: StepState, now: datetime, causation_id: str | None
) -> None:
    assert step.compensation, "validated at registration"
    assert step.build_compensation, "validated at registration"
    saga = decision.saga
    state.move("compensate")
    state.compensation_attempt += 1
    message = messages.command(
        message_type=step.compensation,
        saga_id=saga.id,
        saga_type=saga.type,
        step=step.name,
        attempt=state.compensation_attempt,
        payload=step.build_compensation(saga.input, saga.context),
        now=now,
        causation_id=causation_id,
    )
    decision.outgoing.append(Outgoing(step.participant, message))
    decision.timeline.append(
        TimelineEntry(
            "compensation_sent",
            step.name,
            detail={"command": step.compensation, "attempt": state.compensation_attempt},
            message_id=message.message_id,
        )
    )


def _record_reply(decision: Decision, reply: messages.Message) -> None:
    detail: dict[str, Any] = {
        "type": reply.message_type,
        "outcome": reply.outcome.value,
        "attempt": reply.attempt,
        "source": reply.source,
    }
    if reply.error:
        detail["error"] = dict(reply.error)
    decision.timeline.append(
        TimelineEntry("reply_received", reply.step, detail=detail, message_id=reply.message_id)
    )


def _ignore(decision: Decision, reply: messages.Message, reason: str) -> Decision:
    decision.timeline.append(
        TimelineEntry(
            "reply_ignored",
            reply.step or None,
            detail={"type": reply.message_type, "attempt": reply.attempt, "reason": reason},
            message_id=reply.message_id,
        )
    )
    return decision


def _emit_event(
    decision: Decision,
    message_type: str,
    now: datetime,
    causation_id: str | None,
    payload: Mapping[str, Any],
) -> None:
    saga = decision.saga
    message = messages.event(
        message_type=message_type,
        saga_id=saga.id,
        saga_type=saga.type,
        now=now,
        payload={"status": saga.status.value, **payload},
        causation_id=causation_id,
    )
    decision.outgoing.append(Outgoing(EVENTS_CHANNEL, message))


def _find_step(definition: SagaDefinition, name: str) -> Step | None:
    try:
        return definition.step(name)
    except KeyError:
        return None
