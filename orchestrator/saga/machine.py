"""The saga's and the step's state machines. Illegal transitions raise: they are bugs."""

from __future__ import annotations

import enum
import functools
from typing import Any

from statemachine import State, StateChart
from statemachine.exceptions import TransitionNotAllowed

from orchestrator.saga.errors import InvalidTransitionError


class SagaStatus(enum.StrEnum):
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"


# The status sets, defined here once. ACTIVE: the engine moves the saga (replies, timers).
# TERMINAL: it never moves again. FAILED is neither: it waits for an operator.
ACTIVE = frozenset({SagaStatus.RUNNING, SagaStatus.COMPENSATING})
TERMINAL = frozenset({SagaStatus.COMPLETED, SagaStatus.COMPENSATED})
SETTLED = TERMINAL | {SagaStatus.FAILED}  # nothing happens without an operator


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RESOLVING = "resolving"  # its outcome is unknown: the participant is asked what it did
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"


class SagaMachine(StateChart[Any]):
    allow_event_without_transition = False
    catch_errors_as_events = False

    running = State(initial=True, value=SagaStatus.RUNNING.value)
    compensating = State(value=SagaStatus.COMPENSATING.value)
    completed = State(final=True, value=SagaStatus.COMPLETED.value)
    compensated = State(final=True, value=SagaStatus.COMPENSATED.value)
    failed = State(value=SagaStatus.FAILED.value)

    complete = running.to(completed)
    compensate = running.to(compensating) | failed.to(compensating)
    finish_compensation = compensating.to(compensated)
    fail = running.to(failed) | compensating.to(failed)
    # failed -> running: an operator's retry; compensating -> running: the pivot was found
    # applied while the saga was being aborted, so it can only move forward
    resume = failed.to(running) | compensating.to(running)


class StepMachine(StateChart[Any]):
    allow_event_without_transition = False
    catch_errors_as_events = False

    pending = State(initial=True, value=StepStatus.PENDING.value)
    sent = State(value=StepStatus.SENT.value)
    retry_wait = State(value=StepStatus.RETRY_WAIT.value)
    succeeded = State(value=StepStatus.SUCCEEDED.value)
    failed = State(value=StepStatus.FAILED.value)
    timed_out = State(value=StepStatus.TIMED_OUT.value)
    resolving = State(value=StepStatus.RESOLVING.value)
    compensating = State(value=StepStatus.COMPENSATING.value)
    compensated = State(final=True, value=StepStatus.COMPENSATED.value)

    dispatch = pending.to(sent) | retry_wait.to(sent)
    succeed = (
        sent.to(succeeded)
        | retry_wait.to(succeeded)
        | timed_out.to(succeeded)
        | resolving.to(succeeded)
    )
    fail = sent.to(failed)
    # resolving -> resolving asks again a participant that did not answer
    resolve = (
        sent.to(resolving)
        | retry_wait.to(resolving)
        | timed_out.to(resolving)
        | resolving.to(resolving)
    )
    fence = resolving.to(failed)  # the participant will never apply it
    wait_retry = sent.to(retry_wait) | timed_out.to(retry_wait)
    time_out = sent.to(timed_out)
    # compensating -> compensating resends a compensation that failed or got no reply
    compensate = succeeded.to(compensating) | compensating.to(compensating)
    finish_compensation = compensating.to(compensated)
    # an operator's retry of a step after the pivot that was lost
    redo = failed.to(pending) | timed_out.to(pending)


class _Holder:
    """A model object for python-statemachine to read and write the status on."""

    def __init__(self, status: str) -> None:
        self.status = status


@functools.lru_cache(maxsize=1024)
def transition(machine: type[StateChart[Any]], status: str, event: str) -> str:
    """Apply `event` to a machine in `status` and return the new status.

    The machines have no guards and no actions, so the answer depends on the three arguments
    only and is remembered: building a machine costs far more than the rest of a decision.
    A refused transition raises every time (lru_cache keeps no exceptions).
    """
    holder = _Holder(status)
    sm: Any = machine(model=holder, state_field="status")
    try:
        sm.send(event)
    except TransitionNotAllowed as exc:
        raise InvalidTransitionError(
            f"{machine.__name__}: cannot {event} from {status!r}"
        ) from exc
    return str(holder.status)
