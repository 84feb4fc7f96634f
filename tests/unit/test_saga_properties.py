"""Properties of the pure core under any mix of replies, duplicates, silences and delays."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.saga.definition import RetryPolicy, SagaDefinition, Step
from orchestrator.saga.machine import StepStatus
from orchestrator.testing import SagaHarness

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.1, max_backoff_s=1)


def _step(name: str, **kw: object) -> Step:
    defaults: dict[str, object] = {
        "participant": "p",
        "command": f"{name}.do",
        "build": lambda i, c: {},
        "compensation": f"{name}.undo",
        "build_compensation": lambda i, c: {},
        "timeout_s": 5.0,
        "retry": FAST,
        "compensation_retry": RetryPolicy(max_attempts=4, initial_backoff_s=0.1),
    }
    return Step(name=name, **{**defaults, **kw})  # type: ignore[arg-type]


DEFINITIONS = [
    SagaDefinition("seq", 1, (_step("a"), _step("b"), _step("c")), dict),
    SagaDefinition(
        "pivot", 1, (_step("a"), _step("b", pivot=True), _step("c", compensation=None)), dict
    ),
    SagaDefinition(
        "group", 1, (_step("a"), _step("b", group="g"), _step("c", group="g"), _step("d")), dict
    ),
]

outcome = st.sampled_from(["success", "failure", "retryable", "no_reply"])


@settings(max_examples=300, deadline=None)
@given(
    definition=st.sampled_from(DEFINITIONS),
    actions=st.dictionaries(st.sampled_from("abcd"), st.lists(outcome, max_size=4)),
    compensations=st.dictionaries(st.sampled_from("abcd"), st.lists(outcome, max_size=5)),
    duplicates=st.booleans(),
)
def test_every_saga_settles_and_compensates_exactly_what_may_have_happened(
    definition: SagaDefinition,
    actions: dict[str, list[str]],
    compensations: dict[str, list[str]],
    duplicates: bool,
) -> None:
    harness = SagaHarness(definition, duplicate_replies=duplicates)
    names = [s.name for s in definition.steps]
    for step, outcomes in actions.items():
        if step in names:
            harness.script(step, *outcomes)  # type: ignore[arg-type]
    for step, outcomes in compensations.items():
        if step in names:
            harness.script_compensation(step, *outcomes)  # type: ignore[arg-type]
    harness.start({})
    harness.run()

    assert harness.status in ("completed", "compensated", "failed")
    assert harness.saga.wake_at is None

    started = [n for n in names if harness.saga.steps[n].attempt > 0]
    compensated = list(dict.fromkeys(harness.compensations()))
    # no step is compensated that never started, and compensations run in reverse order
    assert set(compensated) <= set(started)
    assert compensated == sorted(compensated, key=names.index, reverse=True)
    # attempts: each command (and compensation) once per attempt, within its budget
    for step in definition.steps:
        state = harness.saga.steps[step.name]
        assert harness.actions().count(step.name) == state.attempt <= step.retry.max_attempts
        assert harness.compensations().count(step.name) == state.compensation_attempt

    if harness.status == "compensated":
        # every step that succeeded or may have taken effect was compensated
        for name in started:
            state = harness.saga.steps[name]
            assert state.status in (StepStatus.COMPENSATED, StepStatus.FAILED), state
            if state.status is StepStatus.FAILED:
                assert name not in compensated
    if harness.status == "completed":
        assert harness.compensations() == []
        assert all(s.status is StepStatus.SUCCEEDED for s in harness.saga.steps.values())


@settings(max_examples=100, deadline=None)
@given(definition=st.sampled_from(DEFINITIONS), step_index=st.integers(0, 3), late=outcome)
def test_a_late_reply_never_reopens_a_settled_saga(
    definition: SagaDefinition, step_index: int, late: str
) -> None:
    harness = SagaHarness(definition)
    step = definition.steps[min(step_index, len(definition.steps) - 1)].name
    harness.script(step, "no_reply", "no_reply", "no_reply")
    harness.start({})
    harness.run()
    settled = (harness.status, {n: s.status for n, s in harness.saga.steps.items()})
    first = next(c for c in harness.commands if c.step == step)
    if late != "no_reply":
        from orchestrator.saga import messages

        harness.deliver(
            messages.reply_to(first, source="p", outcome=messages.Outcome(late), now=harness.now)
        )
    assert (harness.status, {n: s.status for n, s in harness.saga.steps.items()}) == settled
