"""What operators may do to a saga, as decisions of the pure core.

Each action is recorded in the timeline with who did it and why. Repeating an action that
already took effect changes nothing; an action the saga's state does not allow raises
OperatorActionRefusedError with the reason.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.saga.definition import SagaDefinition
from orchestrator.saga.errors import OperatorActionRefusedError
from orchestrator.saga.machine import TERMINAL, SagaStatus, StepStatus
from orchestrator.saga.saga import (
    Decision,
    Saga,
    advance,
    compensate_next,
    dispatch_compensation,
    fence,
    pivot_passed,
)


def abort(
    saga: Saga, definition: SagaDefinition, now: datetime, actor: str, reason: str
) -> Decision:
    """Compensate now: a running (or failed) saga that has not passed its pivot."""
    decision = Decision(saga.copy(), definition, now)
    status = decision.saga.status
    if status in TERMINAL:
        raise OperatorActionRefusedError(f"the saga is already {status.value}")
    if status is SagaStatus.COMPENSATING:
        return decision  # aborted already, or compensating on its own: nothing new
    if pivot_passed(decision):
        raise OperatorActionRefusedError(
            "the saga passed its pivot step: it can only move forward (retry it instead)"
        )
    decision.note("operator_abort", None, actor=actor, reason=reason)
    decision.saga.parked = None
    if status is SagaStatus.FAILED:
        _resume_compensation(decision)
        return decision
    decision.saga.move("compensate")
    decision.note("saga_compensating", None, code="aborted", message=reason)
    compensate_next(decision, None)
    return decision


def retry(
    saga: Saga, definition: SagaDefinition, now: datetime, actor: str, reason: str
) -> Decision:
    """Resume a failed saga with a fresh retry budget for what it was stuck on, or a parked
    one's timers (after its definition was deployed, say)."""
    decision = Decision(saga.copy(), definition, now)
    status = decision.saga.status
    if decision.saga.parked:
        decision.note("operator_retry", None, actor=actor, reason=reason)
        decision.note("saga_unparked", None, was=decision.saga.parked)
        decision.saga.parked = None
        if status is not SagaStatus.FAILED:
            return decision
    elif status in TERMINAL:
        raise OperatorActionRefusedError(f"the saga is already {status.value}")
    elif status is not SagaStatus.FAILED:
        return decision  # resumed already: nothing new
    else:
        decision.note("operator_retry", None, actor=actor, reason=reason)
    if _stuck_compensation(decision.saga) is not None:
        _resume_compensation(decision)
        return decision
    for state in decision.saga.steps.values():
        if state.status in (StepStatus.FAILED, StepStatus.TIMED_OUT):
            state.move("redo")
            state.retry_base = state.attempt  # a fresh budget; the numbers go on
            state.deadline = state.next_attempt_at = None
    decision.saga.move("resume")
    advance(decision, None)
    return decision


def skip_compensation(
    saga: Saga, definition: SagaDefinition, step: str, now: datetime, actor: str, reason: str
) -> Decision:
    """Mark a compensation that cannot succeed as done (its effect was undone by hand)."""
    decision = Decision(saga.copy(), definition, now)
    state = decision.saga.steps.get(step)
    if state is None:
        raise OperatorActionRefusedError(f"the saga has no step {step!r}")
    if state.status is StepStatus.COMPENSATED:
        return decision  # skipped or compensated already: nothing new
    if (
        decision.saga.status is not SagaStatus.FAILED
        or state.status is not StepStatus.COMPENSATING
    ):
        raise OperatorActionRefusedError(
            f"only a failed saga's stuck compensation can be skipped; the saga is "
            f"{decision.saga.status.value} and step {step!r} is {state.status.value}"
        )
    decision.note("operator_skip", step, actor=actor, reason=reason)
    decision.saga.parked = None
    state.move("finish_compensation")
    state.deadline = state.next_attempt_at = None
    decision.note("step_compensated", step, skipped=True)
    decision.saga.move("compensate")
    compensate_next(decision, None)
    return decision


def fence_step(
    saga: Saga, definition: SagaDefinition, step: str, now: datetime, actor: str, reason: str
) -> Decision:
    """Settle a step waiting on a resolve as never applied, for a participant that cannot
    answer (decommissioned, its data restored by hand): the operator has made sure its
    action did not take effect and cannot any more. The saga goes on as if the participant
    had fenced it."""
    decision = Decision(saga.copy(), definition, now)
    state = decision.saga.steps.get(step)
    if state is None:
        raise OperatorActionRefusedError(f"the saga has no step {step!r}")
    if state.status is StepStatus.FAILED and (state.error or {}).get("code") == "fenced":
        return decision  # fenced already: nothing new
    if state.status is not StepStatus.RESOLVING:
        raise OperatorActionRefusedError(
            f"only a step waiting on a resolve can be fenced; step {step!r} is "
            f"{state.status.value}"
        )
    decision.note("operator_fence", step, actor=actor, reason=reason)
    decision.saga.parked = None
    fence(decision, definition.step(step), state, None, by="operator")
    return decision


def _stuck_compensation(saga: Saga) -> str | None:
    return next((s.name for s in saga.steps.values() if s.status is StepStatus.COMPENSATING), None)


def _resume_compensation(decision: Decision) -> None:
    saga = decision.saga
    saga.move("compensate")
    stuck = _stuck_compensation(saga)
    if stuck is None:
        compensate_next(decision, None)
        return
    state = saga.steps[stuck]
    state.compensation_base = state.compensation_attempt  # a fresh budget
    dispatch_compensation(decision, decision.definition.step(stuck), state, None)
