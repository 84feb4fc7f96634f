"""The saga aggregate and its decisions: (state, event) -> (new state, messages, timeline).

Every function here is pure: time comes in as an argument, nothing is read or written
outside the objects passed in and returned. Three kinds of event move a saga: a reply from
a participant, the clock passing a deadline or a retry time, and an operator's action.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from orchestrator.saga import messages
from orchestrator.saga.definition import PayloadBuilder, RetryPolicy, SagaDefinition, Step
from orchestrator.saga.machine import (
    ACTIVE,
    SagaMachine,
    SagaStatus,
    StepMachine,
    StepStatus,
    transition,
)

EVENTS_CHANNEL = "events"

# Steps whose action may or may not have taken effect. Nothing is compensated on such a
# guess: the participant is asked first (resolve), and its answer decides.
IN_FLIGHT = frozenset({StepStatus.SENT, StepStatus.RETRY_WAIT, StepStatus.TIMED_OUT})
# How often a participant that does not answer a resolve is asked again: without end, since
# compensating without its answer could leave an effect undone or undo one twice.
RESOLVE_BACKOFF = RetryPolicy(max_attempts=1, initial_backoff_s=1.0, max_backoff_s=60.0)
APPLIED, FENCED = "applied", "fenced"


@dataclasses.dataclass(slots=True)
class StepState:
    name: str
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    compensation_attempt: int = 0
    resolve_attempt: int = 0
    # Attempt numbers only grow, so that a reply to an attempt before an operator's retry is
    # recognised as stale; the retry budget counts from these.
    retry_base: int = 0
    compensation_base: int = 0
    # The last command sent for the step (action, compensation or resolve): only a reply
    # that answers it counts. None before the first, and for steps sent before this was kept.
    command_id: str | None = None
    deadline: datetime | None = None
    next_attempt_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    def move(self, event: str) -> None:
        self.status = StepStatus(transition(StepMachine, self.status, event))

    @property
    def attempts_spent(self) -> int:
        return self.attempt - self.retry_base

    @property
    def compensations_spent(self) -> int:
        return self.compensation_attempt - self.compensation_base


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
    started_at: datetime | None = None
    trace_id: str = ""
    parked: str | None = None  # why the saga waits for an operator; its timers are stopped

    def move(self, event: str) -> None:
        self.status = SagaStatus(transition(SagaMachine, self.status, event))

    def copy(self) -> Saga:
        """A copy a decision may change without touching this one: its own context and
        steps (decisions assign to them; they change nothing nested), the same input (read
        only). Far cheaper than a deep copy, on every reply."""
        return dataclasses.replace(
            self,
            context=dict(self.context),
            steps={name: dataclasses.replace(step) for name, step in self.steps.items()},
        )

    @property
    def wake_at(self) -> datetime | None:
        """When the clock next matters to this saga: a deadline or a retry time."""
        if self.status not in ACTIVE or self.parked:
            return None
        times = [t for s in self.steps.values() for t in (s.deadline, s.next_attempt_at) if t]
        return min(times, default=None)


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
    definition: SagaDefinition
    now: datetime
    outgoing: list[Outgoing] = dataclasses.field(default_factory=list)
    timeline: list[TimelineEntry] = dataclasses.field(default_factory=list)

    def note(self, kind: str, step: str | None = None, /, **detail: Any) -> None:
        self.timeline.append(TimelineEntry(kind, step, detail))

    def emit(self, message_type: str, causation_id: str | None, /, **payload: Any) -> None:
        saga = self.saga
        message = messages.event(
            message_type=message_type,
            saga_id=saga.id,
            saga_type=saga.type,
            now=self.now,
            payload={"status": saga.status.value, **payload},
            causation_id=causation_id,
            trace_id=saga.trace_id,
        )
        self.outgoing.append(Outgoing(EVENTS_CHANNEL, message))


def start(
    definition: SagaDefinition,
    saga_id: str,
    saga_input: Mapping[str, Any],
    now: datetime,
    trace_id: str = "",
) -> Decision:
    saga = Saga(
        id=saga_id,
        type=definition.name,
        definition_version=definition.version,
        status=SagaStatus.RUNNING,
        input=dict(saga_input),
        context={},
        steps={s.name: StepState(s.name) for s in definition.steps},
        started_at=now,
        trace_id=trace_id,
    )
    decision = Decision(saga, definition, now)
    decision.note("saga_started", version=definition.version)
    # Events say what happened, not what the saga holds: an input near the size limit would
    # make the event larger than the broker takes (GET /sagas/{id} has the input).
    decision.emit("saga.started", None, version=definition.version)
    advance(decision, None)
    return decision


def park(saga: Saga, reason: str) -> tuple[Saga, TimelineEntry]:
    """Stop the saga's timers until an operator retries it: it cannot be decided here (its
    definition is missing, a payload builder raised) or a message of it cannot be sent.
    Needs no definition, since a missing one is a reason to park."""
    parked = saga.copy()
    parked.parked = reason
    return parked, TimelineEntry("saga_parked", None, {"reason": reason})


def handle_reply(
    saga: Saga, definition: SagaDefinition, reply: messages.Message, now: datetime
) -> Decision:
    decision = Decision(saga.copy(), definition, now)
    state = decision.saga.steps.get(reply.step)
    step = _find_step(definition, reply.step)
    if state is None or step is None:
        _ignore(decision, reply, "the saga has no such step")
    elif decision.saga.status not in ACTIVE:
        _ignore(decision, reply, f"the saga is {decision.saga.status.value}", "late_reply")
    elif reply.replied_command_type == step.command:
        _on_action_reply(decision, step, state, reply)
    elif reply.replied_command_type == step.compensation:
        _on_compensation_reply(decision, step, state, reply)
    elif reply.replied_command_type == step.resolve_command:
        _on_resolution(decision, step, state, reply)
    else:
        _ignore(decision, reply, f"{reply.message_type!r} answers no command of this step")
    return decision


def why_reply_does_not_count(
    saga: Saga, definition: SagaDefinition, reply: messages.Message
) -> str | None:
    """None when `reply` may be applied: it comes from the participant that owns its step and
    answers the command last sent for the step. Otherwise why not: a reply from anyone else,
    one to an earlier attempt or command (late, or replayed: the two look alike) changes
    nothing. Steps sent before command ids were kept are matched by attempt instead."""
    state = saga.steps.get(reply.step)
    step = _find_step(definition, reply.step)
    if state is None or step is None:
        return f"the saga has no step {reply.step[:100]!r}"
    if reply.source != step.participant:
        return (
            f"step {step.name} belongs to {step.participant}; the reply comes from "
            f"{reply.source[:100]!r}"
        )
    if state.command_id is None:
        return None if state.attempt else f"no command was sent for step {step.name}"
    if reply.causation_id != state.command_id:
        return (
            f"it answers {reply.causation_id}, not {state.command_id}, the command last sent "
            f"for step {step.name} (attempt {reply.attempt} of {reply.replied_command_type}; "
            f"the step is {state.status.value}): late or replayed"
        )
    return None


def handle_timers(saga: Saga, definition: SagaDefinition, now: datetime) -> Decision:
    """Fire every deadline and retry time of the saga that is due at `now`."""
    decision = Decision(saga.copy(), definition, now)
    for step in definition.steps:
        state = decision.saga.steps[step.name]
        if decision.saga.status not in ACTIVE:
            break
        if state.deadline is not None and state.deadline <= now:
            _on_deadline(decision, step, state)
        elif state.next_attempt_at is not None and state.next_attempt_at <= now:
            _on_retry_time(decision, step, state)
    return decision


# -- replies -------------------------------------------------------------------------------


def _on_action_reply(
    decision: Decision, step: Step, state: StepState, reply: messages.Message
) -> None:
    outcome = reply.outcome
    # Past why_reply_does_not_count, a reply answers the command last sent for the step; an
    # action reply while resolving, or one to an earlier attempt, comes here only for a step
    # sent before command ids were kept.
    if state.status is StepStatus.RESOLVING:
        if outcome is not messages.Outcome.SUCCESS:
            # only the resolve's answer says whether an attempt may still apply
            _ignore(decision, reply, "step is resolving; its answer decides", "late_reply")
            return
        _record_reply(decision, reply)
        _succeeded(decision, step, state, dict(reply.data), reply.message_id, resolved=True)
        return
    current = reply.attempt == state.attempt and state.status is StepStatus.SENT
    # A success from an earlier attempt is still a success: the participant applied it once.
    late_success = outcome is messages.Outcome.SUCCESS and state.status in IN_FLIGHT
    if not (current or late_success):
        kind = "late_reply" if state.status is not StepStatus.PENDING else "reply_ignored"
        _ignore(decision, reply, f"step is {state.status.value} at attempt {state.attempt}", kind)
        return
    _record_reply(decision, reply)
    state.deadline = state.next_attempt_at = None
    if outcome is messages.Outcome.SUCCESS:
        _succeeded(decision, step, state, dict(reply.data), reply.message_id)
        return
    state.error = dict(reply.error)
    if outcome is messages.Outcome.RETRYABLE and state.attempts_spent < step.retry.max_attempts:
        state.move("wait_retry")
        _schedule_retry(decision, step, state)
        return
    state.move("fail")
    if outcome is messages.Outcome.RETRYABLE:
        state.error = {**state.error, "cause": "retries exhausted"}
    decision.note("step_failed", step.name, **state.error)
    _on_step_lost(decision, step, reply.message_id, state.error)


def _on_compensation_reply(
    decision: Decision, step: Step, state: StepState, reply: messages.Message
) -> None:
    awaited = (
        state.status is StepStatus.COMPENSATING
        and reply.attempt == state.compensation_attempt
        and state.deadline is not None
    )
    if not awaited:
        _ignore(decision, reply, f"step is {state.status.value}, not awaiting this reply")
        return
    _record_reply(decision, reply)
    state.deadline = None
    if reply.outcome is messages.Outcome.SUCCESS:
        state.move("finish_compensation")
        decision.note("step_compensated", step.name)
        compensate_next(decision, reply.message_id)
        return
    _compensation_failed(decision, step, state, dict(reply.error), reply.message_id)


# -- the clock -----------------------------------------------------------------------------


def _on_deadline(decision: Decision, step: Step, state: StepState) -> None:
    state.deadline = None
    if state.status is StepStatus.RESOLVING:
        seed = f"{decision.saga.id}:{step.name}:r"
        delay = RESOLVE_BACKOFF.backoff_s(state.resolve_attempt, seed)
        state.next_attempt_at = decision.now + timedelta(seconds=delay)
        decision.note(
            "resolve_unanswered",
            step.name,
            attempt=state.resolve_attempt,
            again_at=state.next_attempt_at.isoformat(),
        )
        return
    if state.status is StepStatus.COMPENSATING:
        error = {"code": "timeout", "message": "no reply to the compensation in time"}
        decision.note("compensation_timed_out", step.name, attempt=state.compensation_attempt)
        _compensation_failed(decision, step, state, error, None)
        return
    state.move("time_out")
    state.error = {"code": "timeout", "message": f"no reply within {step.timeout_s}s"}
    decision.note("step_timed_out", step.name, attempt=state.attempt)
    if state.attempts_spent < step.retry.max_attempts:
        state.move("wait_retry")
        _schedule_retry(decision, step, state)
        return
    if pivot_passed(decision):
        # nothing is compensated after the pivot: an operator's retry sends it again, and
        # the participant's ledger answers a repeat with what it did
        _on_step_lost(decision, step, None, {**state.error, "cause": "retries exhausted"})
        return
    ask_resolution(decision, step, state, None)


def _on_retry_time(decision: Decision, step: Step, state: StepState) -> None:
    state.next_attempt_at = None
    if state.status is StepStatus.COMPENSATING:
        dispatch_compensation(decision, step, state, None)
    elif state.status is StepStatus.RESOLVING:
        ask_resolution(decision, step, state, None)
    elif state.status is StepStatus.RETRY_WAIT and decision.saga.status is SagaStatus.RUNNING:
        _dispatch(decision, step, state, None)


def _schedule_retry(decision: Decision, step: Step, state: StepState) -> None:
    delay = step.retry.backoff_s(state.attempts_spent, f"{decision.saga.id}:{step.name}")
    state.next_attempt_at = decision.now + timedelta(seconds=delay)
    decision.note(
        "retry_scheduled",
        step.name,
        attempt=state.attempt + 1,
        at=state.next_attempt_at.isoformat(),
        error=state.error,
    )


# -- moving forward and backward -----------------------------------------------------------


def advance(decision: Decision, causation_id: str | None) -> None:
    """Send the next step (or parallel group), or complete the saga."""
    saga = decision.saga
    if saga.status is not SagaStatus.RUNNING:
        return
    for step in decision.definition.steps:
        state = saga.steps[step.name]
        if state.status is StepStatus.SUCCEEDED:
            continue
        if state.status is StepStatus.PENDING:
            for member in decision.definition.members(step):
                if saga.steps[member.name].status is StepStatus.PENDING:
                    _dispatch(decision, member, saga.steps[member.name], causation_id)
        return  # a step or group is in flight: wait for it
    saga.move("complete")
    decision.note("saga_completed")
    decision.emit("saga.completed", causation_id, context=saga.context)


def _on_step_lost(
    decision: Decision, step: Step, causation_id: str | None, reason: Mapping[str, Any]
) -> None:
    """A step will not succeed: compensate before the pivot, stop for an operator after."""
    saga = decision.saga
    if saga.status is not SagaStatus.RUNNING:
        compensate_next(decision, causation_id)  # already compensating: just go on
        return
    if pivot_passed(decision):
        saga.move("fail")
        detail = {"step": step.name, "reason": dict(reason), "cause": "step after the pivot lost"}
        decision.note("saga_failed", step.name, **detail)
        decision.emit("saga.failed", causation_id, **detail)
        return
    saga.move("compensate")
    decision.note("saga_compensating", step.name, **reason)
    compensate_next(decision, causation_id)


def compensate_next(decision: Decision, causation_id: str | None) -> None:
    """Compensate the latest step that took effect, once every later step whose outcome
    was unknown is resolved; finish when none is left."""
    saga = decision.saga
    if saga.status is not SagaStatus.COMPENSATING:
        return
    steps = decision.definition.steps
    if any(saga.steps[s.name].status in _AWAITED and not s.read_only for s in steps):
        return  # one at a time, in reverse order
    for step in reversed(steps):
        state = saga.steps[step.name]
        if step.read_only:
            continue  # it changed nothing, whatever became of it: no need to wait for it
        if state.status in IN_FLIGHT:
            ask_resolution(decision, step, state, causation_id)
            return
        if state.status is StepStatus.SUCCEEDED and step.compensation:
            dispatch_compensation(decision, step, state, causation_id)
            return
    saga.move("finish_compensation")
    decision.note("saga_compensated")
    decision.emit("saga.compensated", causation_id)


_AWAITED = frozenset({StepStatus.COMPENSATING, StepStatus.RESOLVING})


def _on_resolution(
    decision: Decision, step: Step, state: StepState, reply: messages.Message
) -> None:
    """The participant's answer to a resolve: the action was applied (with its stored
    result) or is fenced, never to apply."""
    if state.status is not StepStatus.RESOLVING:
        _ignore(decision, reply, f"step is {state.status.value}, not resolving", "late_reply")
        return
    success = reply.outcome is messages.Outcome.SUCCESS
    resolution = reply.data.get("resolution") if success else None
    if resolution not in (APPLIED, FENCED):
        _ignore(decision, reply, "the participant did not resolve the step; asked again later")
        return
    if resolution == FENCED:
        _record_reply(decision, reply)
        fence(decision, step, state, reply.message_id)
        return
    result = reply.data.get("result")
    if not isinstance(result, Mapping):
        _ignore(decision, reply, "applied, without its result as an object; asked again later")
        return
    _record_reply(decision, reply)
    _succeeded(decision, step, state, dict(result), reply.message_id, resolved=True)


def fence(
    decision: Decision, step: Step, state: StepState, causation_id: str | None, **detail: Any
) -> None:
    """The step's action did not take effect and never will: go on without it."""
    state.deadline = state.next_attempt_at = None
    state.move("fence")
    state.error = {"code": "fenced", "message": "not applied; the participant will never apply it"}
    decision.note("step_fenced", step.name, attempt=state.attempt, **detail)
    _on_step_lost(decision, step, causation_id, state.error)


def _succeeded(
    decision: Decision,
    step: Step,
    state: StepState,
    result: dict[str, Any],
    causation_id: str | None,
    **detail: Any,
) -> None:
    """The action took effect (its reply came, or its resolve found it applied): the saga
    goes on. A pivot that took effect during an abort overrules the abort: the saga can
    only move forward."""
    state.deadline = state.next_attempt_at = None
    state.move("succeed")
    state.result, state.error = result, None
    decision.saga.context.update(result)
    decision.note("step_succeeded", step.name, **detail)
    saga = decision.saga
    if saga.status is SagaStatus.COMPENSATING and step.pivot:
        saga.move("resume")
        decision.note("abort_overruled", step.name, reason="the pivot was applied")
    if saga.status is SagaStatus.RUNNING:
        advance(decision, causation_id)
    else:
        compensate_next(decision, causation_id)


def _compensation_failed(
    decision: Decision,
    step: Step,
    state: StepState,
    error: dict[str, Any],
    causation_id: str | None,
) -> None:
    state.error = error
    policy = step.compensation_retry
    if state.compensations_spent < policy.max_attempts:
        delay = policy.backoff_s(state.compensations_spent, f"{decision.saga.id}:{step.name}:c")
        state.next_attempt_at = decision.now + timedelta(seconds=delay)
        decision.note(
            "compensation_retry_scheduled",
            step.name,
            attempt=state.compensation_attempt + 1,
            at=state.next_attempt_at.isoformat(),
            error=error,
        )
        return
    decision.saga.move("fail")
    detail = {"step": step.name, "error": error, "cause": "compensation retries exhausted"}
    decision.note("saga_failed", step.name, **detail)
    decision.emit("saga.failed", causation_id, **detail)


def pivot_passed(decision: Decision) -> bool:
    index = decision.definition.pivot_index
    if index is None:
        return False
    pivot = decision.definition.steps[index]
    return decision.saga.steps[pivot.name].status is StepStatus.SUCCEEDED


# -- sending -------------------------------------------------------------------------------


def _dispatch(decision: Decision, step: Step, state: StepState, causation_id: str | None) -> None:
    state.move("dispatch")
    state.attempt += 1
    state.deadline = decision.now + timedelta(seconds=step.timeout_s)
    state.next_attempt_at = None
    _send(decision, "command_sent", step, step.command, step.build, state.attempt, causation_id)


def ask_resolution(
    decision: Decision, step: Step, state: StepState, causation_id: str | None
) -> None:
    """Ask the participant what became of the step's action; its kit fences the action if
    it was not applied, so the answer cannot change afterwards."""
    state.move("resolve")
    state.resolve_attempt += 1
    state.deadline = decision.now + timedelta(seconds=step.timeout_s)
    state.next_attempt_at = None
    attempt = state.attempt
    _send(
        decision,
        "resolve_sent",
        step,
        step.resolve_command,
        lambda _input, _context: {"command": step.command, "attempt": attempt},
        state.resolve_attempt,
        causation_id,
    )


def dispatch_compensation(
    decision: Decision, step: Step, state: StepState, causation_id: str | None
) -> None:
    assert step.compensation, "validated at registration"
    assert step.build_compensation, "validated at registration"
    state.move("compensate")
    state.compensation_attempt += 1
    state.deadline = decision.now + timedelta(seconds=step.compensation_timeout_s)
    state.next_attempt_at = None
    _send(
        decision,
        "compensation_sent",
        step,
        step.compensation,
        step.build_compensation,
        state.compensation_attempt,
        causation_id,
    )


def _send(
    decision: Decision,
    kind: str,
    step: Step,
    command_type: str,
    build: PayloadBuilder,
    attempt: int,
    causation_id: str | None,
) -> None:
    saga = decision.saga
    message = messages.command(
        message_type=command_type,
        saga_id=saga.id,
        saga_type=saga.type,
        step=step.name,
        attempt=attempt,
        payload=build(saga.input, saga.context),
        now=decision.now,
        causation_id=causation_id,
        trace_id=saga.trace_id,
        deadline=saga.steps[step.name].deadline,
    )
    if command_type == step.command and step.command_version != 1:
        message = dataclasses.replace(message, version=step.command_version)
    saga.steps[step.name].command_id = message.message_id
    decision.outgoing.append(Outgoing(step.participant, message))
    decision.timeline.append(
        TimelineEntry(
            kind,
            step.name,
            detail={"command": command_type, "attempt": attempt},
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


def _ignore(
    decision: Decision, reply: messages.Message, reason: str, kind: str = "reply_ignored"
) -> None:
    detail: dict[str, Any] = {"type": reply.message_type, "attempt": reply.attempt}
    if reply.kind is messages.Kind.REPLY and "outcome" in reply.payload:
        detail["outcome"] = reply.payload["outcome"]
    decision.timeline.append(
        TimelineEntry(
            kind,
            reply.step or None,
            detail={**detail, "reason": reason},
            message_id=reply.message_id,
        )
    )


def _find_step(definition: SagaDefinition, name: str) -> Step | None:
    try:
        return definition.step(name)
    except KeyError:
        return None
