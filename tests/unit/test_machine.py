import itertools

import pytest

from orchestrator.saga.errors import InvalidTransitionError
from orchestrator.saga.machine import (
    SagaMachine,
    SagaStatus,
    StepMachine,
    StepStatus,
    transition,
)

SAGA_ALLOWED = {
    ("running", "complete"): "completed",
    ("running", "compensate"): "compensating",
    ("failed", "compensate"): "compensating",
    ("compensating", "finish_compensation"): "compensated",
    ("running", "fail"): "failed",
    ("compensating", "fail"): "failed",
    ("failed", "resume"): "running",
    ("compensating", "resume"): "running",
}
SAGA_EVENTS = sorted({event for _, event in SAGA_ALLOWED})

STEP_ALLOWED = {
    ("pending", "dispatch"): "sent",
    ("retry_wait", "dispatch"): "sent",
    ("sent", "succeed"): "succeeded",
    ("retry_wait", "succeed"): "succeeded",
    ("timed_out", "succeed"): "succeeded",
    ("sent", "fail"): "failed",
    ("sent", "wait_retry"): "retry_wait",
    ("timed_out", "wait_retry"): "retry_wait",
    ("sent", "time_out"): "timed_out",
    ("succeeded", "compensate"): "compensating",
    ("resolving", "succeed"): "succeeded",
    ("sent", "resolve"): "resolving",
    ("retry_wait", "resolve"): "resolving",
    ("timed_out", "resolve"): "resolving",
    ("resolving", "resolve"): "resolving",
    ("resolving", "fence"): "failed",
    ("compensating", "compensate"): "compensating",
    ("compensating", "finish_compensation"): "compensated",
    ("failed", "redo"): "pending",
    ("timed_out", "redo"): "pending",
}
STEP_EVENTS = sorted({event for _, event in STEP_ALLOWED})


@pytest.mark.parametrize(("status", "event"), sorted(SAGA_ALLOWED))
def test_saga_allowed_transition_reaches_its_target(status: str, event: str) -> None:
    assert transition(SagaMachine, status, event) == SAGA_ALLOWED[status, event]


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (s.value, e)
        for s, e in itertools.product(SagaStatus, SAGA_EVENTS)
        if (s.value, e) not in SAGA_ALLOWED
    ],
)
def test_every_illegal_saga_transition_raises(status: str, event: str) -> None:
    with pytest.raises(InvalidTransitionError, match=f"cannot {event} from '{status}'"):
        transition(SagaMachine, status, event)


@pytest.mark.parametrize(("status", "event"), sorted(STEP_ALLOWED))
def test_step_allowed_transition_reaches_its_target(status: str, event: str) -> None:
    assert transition(StepMachine, status, event) == STEP_ALLOWED[status, event]


@pytest.mark.parametrize(
    ("status", "event"),
    [
        (s.value, e)
        for s, e in itertools.product(StepStatus, STEP_EVENTS)
        if (s.value, e) not in STEP_ALLOWED
    ],
)
def test_every_illegal_step_transition_raises(status: str, event: str) -> None:
    with pytest.raises(InvalidTransitionError):
        transition(StepMachine, status, event)


def test_unknown_event_raises() -> None:
    with pytest.raises(InvalidTransitionError):
        transition(SagaMachine, "running", "explode")


def test_final_saga_statuses_have_no_way_out() -> None:
    for status in ("completed", "compensated"):
        for event in SAGA_EVENTS:
            with pytest.raises(InvalidTransitionError):
                transition(SagaMachine, status, event)
