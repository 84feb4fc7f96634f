import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.example_inputs import EXAMPLE_INPUTS
from orchestrator.saga import messages
from orchestrator.saga import saga as core
from orchestrator.saga.definition import DefinitionRegistry, RetryPolicy, SagaDefinition, Step
from orchestrator.saga.errors import InvalidDefinitionError, UnknownSagaTypeError
from orchestrator.saga.machine import SagaStatus, StepStatus
from orchestrator.sagas import order
from orchestrator.testing import SagaHarness, check_compensation_matrix

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORDER_INPUT = order.validate_input(EXAMPLE_INPUTS["order"])


def harness(definition: SagaDefinition = order.DEFINITION) -> SagaHarness:
    return SagaHarness(definition, start_at=NOW)


def test_start_sends_the_first_command_and_a_started_event() -> None:
    decision = core.start(order.DEFINITION, "s-1", ORDER_INPUT, NOW)
    assert decision.saga.status is SagaStatus.RUNNING
    assert [o.message.message_type for o in decision.outgoing] == [
        "saga.started",
        "inventory.reserve",
    ]
    assert decision.saga.steps["reserve_inventory"].status is StepStatus.SENT
    assert [e.kind for e in decision.timeline] == ["saga_started", "command_sent"]
    assert decision.saga.wake_at == NOW + timedelta(seconds=30)


def test_commands_carry_their_deadline_and_events_carry_no_input() -> None:
    h = SagaHarness(order.DEFINITION)
    h.script("create_shipment", "failure")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert all(c.deadline is not None and c.deadline > c.timestamp for c in h.commands)
    started = next(e for e in h.events if e.message_type == "saga.started")
    assert "input" not in started.payload
    assert ORDER_INPUT["card"] not in str([e.payload for e in h.events])


def test_all_steps_succeeding_completes_the_saga_with_the_context_merged() -> None:
    h = harness()
    h.script("charge_payment", "success", data={"chargeId": "ch-1"})
    h.script("create_shipment", "success", data={"shipmentId": "sh-1"})
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "completed"
    assert h.actions() == ["reserve_inventory", "charge_payment", "create_shipment"]
    shipment = h.commands[-1]
    assert shipment.payload["chargeId"] == "ch-1"
    assert h.saga.context == {"chargeId": "ch-1", "shipmentId": "sh-1"}
    assert [e.message_type for e in h.events] == ["saga.started", "saga.completed"]
    assert h.saga.wake_at is None


def test_failed_step_compensates_in_reverse_order() -> None:
    h = harness()
    h.script("charge_payment", "success", data={"chargeId": "ch-1"})
    h.script("create_shipment", "failure")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["charge_payment", "reserve_inventory"]
    refund = next(c for c in h.commands if c.message_type == "payment.refund")
    assert refund.payload["chargeId"] == "ch-1"
    assert [s.status for s in h.saga.steps.values()] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
    ]
    assert h.events[-1].message_type == "saga.compensated"


def test_first_step_failing_compensates_nothing() -> None:
    h = harness()
    h.script("reserve_inventory", "failure")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == []


def test_retryable_replies_are_retried_with_backoff_until_success() -> None:
    h = harness()
    h.script("charge_payment", "retryable", "retryable", "success")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "completed"
    assert h.actions().count("charge_payment") == 3
    assert h.saga.steps["charge_payment"].attempt == 3
    assert h.kinds().count("retry_scheduled") == 2
    assert h.now > NOW  # the retries waited for their backoff


def test_retries_exhausted_before_the_pivot_compensates() -> None:
    h = harness()
    h.script("charge_payment", "retryable", "retryable", "retryable")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["reserve_inventory"]
    assert h.saga.steps["charge_payment"].error == {
        "code": "scripted_retryable",
        "message": "scripted retryable",
        "cause": "retries exhausted",
    }


def test_a_step_timed_out_past_its_retries_is_resolved_before_anything_is_compensated() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert h.kinds().count("step_timed_out") == 3
    assert h.resolutions() == ["charge_payment"]
    assert "step_fenced" in h.kinds()
    # fenced: the charge never applied and never will, so it is not refunded
    assert h.compensations() == ["reserve_inventory"]
    assert h.ledger["charge_payment"][0] == "tombstone"


def test_a_step_found_applied_by_its_resolve_goes_on_as_if_its_reply_had_come() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "lost_reply", data={"chargeId": "ch-1"})
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "completed"
    assert h.resolutions() == ["charge_payment"]
    assert h.compensations() == []
    assert h.saga.steps["charge_payment"].result == {"chargeId": "ch-1"}
    assert h.saga.context["chargeId"] == "ch-1"


def test_a_reply_to_an_earlier_attempt_changes_nothing_late_or_replayed() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.script_resolution("charge_payment", "no_reply")
    h.start(ORDER_INPUT)
    h.run(until=lambda h: "charge_payment" in h.resolutions())
    before = dataclasses.replace(h.saga, steps=dict(h.saga.steps))
    first_charge = next(c for c in h.commands if c.message_type == "payment.charge")
    h.deliver(messages.reply_to(first_charge, source="payment", outcome=S, now=h.now))
    assert h.saga.steps == before.steps
    assert h.saga.steps["charge_payment"].status is StepStatus.RESOLVING
    assert "late or replayed" in h.dead_lettered[-1][1]
    h.run()  # the resolve's answer decides: nothing was applied, so it is fenced
    assert h.status == "compensated"


def test_a_reply_counts_only_from_the_steps_participant_for_the_command_last_sent() -> None:
    h = harness()
    h.script("reserve_inventory", "retryable", "success")
    h.start(ORDER_INPUT)
    first = h.commands[-1]
    h.run(until=lambda h: len(h.actions()) == 2)
    second = h.commands[-1]
    assert h.saga.steps["reserve_inventory"].command_id == second.message_id
    saga, definition = h.saga, order.DEFINITION
    forged = messages.reply_to(second, source="payment", outcome=S, now=h.now)
    stale = messages.reply_to(first, source="inventory", outcome=S, now=h.now)
    current = messages.reply_to(second, source="inventory", outcome=S, now=h.now)
    assert "belongs to inventory" in str(core.why_reply_does_not_count(saga, definition, forged))
    assert "late or replayed" in str(core.why_reply_does_not_count(saga, definition, stale))
    assert core.why_reply_does_not_count(saga, definition, current) is None


def test_a_step_sent_before_command_ids_were_kept_is_matched_by_attempt() -> None:
    h = harness()
    h.start(ORDER_INPUT)
    reserve = h.commands[-1]
    h.saga.steps["reserve_inventory"].command_id = None
    reply = messages.reply_to(reserve, source="inventory", outcome=S, now=h.now)
    assert core.why_reply_does_not_count(h.saga, order.DEFINITION, reply) is None
    h.deliver(reply)
    assert h.saga.steps["reserve_inventory"].status is StepStatus.SUCCEEDED


def test_a_participant_that_does_not_answer_a_resolve_is_asked_again_with_backoff() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.script_resolution("charge_payment", "no_reply", "no_reply", "no_reply")
    h.start(ORDER_INPUT)
    h.run(until=lambda h: len(h.resolutions()) == 4)
    asked = [c.timestamp for c in h.commands if c.message_type == "payment.resolve"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(asked)]
    assert gaps == sorted(gaps)  # the step's timeout, then a backoff that grows
    assert gaps[0] > timedelta(seconds=order.DEFINITION.step("charge_payment").timeout_s)
    assert h.kinds().count("resolve_unanswered") == 3
    assert h.status == "running"  # waiting on the resolution; nothing compensated meanwhile
    assert h.compensations() == []
    assert h.saga.steps["charge_payment"].status is StepStatus.RESOLVING
    assert h.saga.steps["charge_payment"].resolve_attempt == 4
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["reserve_inventory"]


def test_an_abort_while_the_pivot_is_in_flight_never_undoes_an_applied_pivot() -> None:
    h = harness(PIVOTED)
    h.script("b", "lost_reply")
    h.start({})
    h.run(until=lambda h: "b" in h.actions())
    h.abort("customer cancelled")
    h.run()
    assert h.status == "completed"  # the pivot took effect: the saga can only go forward
    assert h.compensations() == []
    assert "abort_overruled" in h.kinds()
    assert h.actions() == ["a", "b", "c"]


def test_an_abort_while_the_pivot_is_in_flight_compensates_once_it_is_fenced() -> None:
    h = harness(PIVOTED)
    h.script("b", "no_reply", "no_reply", "no_reply")
    h.start({})
    h.run(until=lambda h: "b" in h.actions())
    h.abort("customer cancelled")
    h.run()
    assert h.status == "compensated"
    assert h.resolutions() == ["b"]
    assert h.compensations() == ["a"]
    assert h.actions_applied["b"] == 0


def test_a_read_only_step_is_skipped_when_compensating() -> None:
    h = harness(READ_ONLY)
    h.script("b", "failure")
    h.start({})
    h.run()
    assert h.status == "compensated"
    assert h.actions() == ["a", "check", "b"]
    assert h.compensations() == ["a"]


def test_compensation_that_keeps_failing_leaves_the_saga_failed() -> None:
    h = harness()
    h.script("charge_payment", "failure")
    budget = order.DEFINITION.step("reserve_inventory").compensation_retry.max_attempts
    h.script_compensation("reserve_inventory", *["failure"] * budget)
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "failed"
    assert h.compensations() == ["reserve_inventory"] * budget
    assert h.events[-1].message_type == "saga.failed"
    assert h.timeline[-1].detail["cause"] == "compensation retries exhausted"
    assert h.saga.wake_at is None


def test_a_compensation_without_reply_is_resent_until_answered() -> None:
    h = harness()
    h.script("charge_payment", "failure")
    h.script_compensation("reserve_inventory", "no_reply", "no_reply")
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["reserve_inventory"] * 3
    assert h.kinds().count("compensation_timed_out") == 2


S, F = messages.Outcome.SUCCESS, messages.Outcome.FAILURE


def test_repeated_or_stale_reply_changes_nothing() -> None:
    h = harness()
    h.start(ORDER_INPUT)
    reserve = h.commands[0]
    h.deliver(messages.reply_to(reserve, source="inventory", outcome=S, now=NOW))
    before = dataclasses.replace(h.saga, steps=dict(h.saga.steps))
    h.deliver(messages.reply_to(reserve, source="inventory", outcome=F, now=NOW))
    assert h.saga.steps == before.steps
    assert h.kinds()[-1] == "late_reply"
    assert len(h.commands) == 2


def test_reply_for_an_unknown_step_is_dead_lettered() -> None:
    h = harness()
    h.start(ORDER_INPUT)
    reply = messages.reply_to(h.commands[0], source="t", outcome=S, now=NOW)
    h.deliver(dataclasses.replace(reply, step="nope"))
    assert h.dead_lettered[-1][1] == "the saga has no step 'nope'"
    assert h.kinds()[-1] == "command_sent"
    assert h.status == "running"


def test_handle_reply_does_not_change_the_saga_passed_in() -> None:
    d = core.start(order.DEFINITION, "s-1", ORDER_INPUT, NOW)
    reply = messages.reply_to(d.outgoing[1].message, source="t", outcome=S, now=NOW)
    core.handle_reply(d.saga, order.DEFINITION, reply, NOW)
    assert d.saga.steps["reserve_inventory"].status is StepStatus.SENT


def test_the_order_saga_passes_its_compensation_matrix() -> None:
    assert check_compensation_matrix(order.DEFINITION, ORDER_INPUT) == []


# -- pivot and parallel groups -------------------------------------------------------------


def _step(name: str, **kw: object) -> Step:
    defaults: dict[str, object] = {
        "participant": "inventory",
        "command": f"{name}.do",
        "build": lambda i, c: {},
        "compensation": f"{name}.undo",
        "build_compensation": lambda i, c: {},
    }
    if kw.get("compensation", "") is None:
        defaults["build_compensation"] = None
    return Step(name=name, **{**defaults, **kw})  # type: ignore[arg-type]


PIVOTED = SagaDefinition(
    "pivoted",
    1,
    (_step("a"), _step("b", pivot=True, compensation=None), _step("c", compensation=None)),
    lambda raw: dict(raw),
)
READ_ONLY = SagaDefinition(
    "read_only",
    1,
    (_step("a"), _step("check", compensation=None), _step("b", pivot=True, compensation=None)),
    lambda raw: dict(raw),
)
PARALLEL = SagaDefinition(
    "parallel",
    1,
    (_step("a"), _step("b", group="g"), _step("c", group="g"), _step("d")),
    lambda raw: dict(raw),
)


def test_after_the_pivot_a_lost_step_fails_the_saga_without_compensating() -> None:
    h = harness(PIVOTED)
    h.script("c", "retryable", "retryable", "retryable")
    h.start({})
    h.run()
    assert h.status == "failed"
    assert h.compensations() == []
    assert h.timeline[-1].detail["cause"] == "step after the pivot lost"


def test_a_failing_pivot_compensates_the_steps_before_it() -> None:
    h = harness(PIVOTED)
    h.script("b", "failure")
    h.start({})
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["a"]


def test_a_parallel_group_is_sent_together_and_waited_for() -> None:
    h = harness(PARALLEL)
    h.start({})
    h.run()
    assert h.status == "completed"
    assert h.actions() == ["a", "b", "c", "d"]
    sent_b = next(
        i for i, e in enumerate(h.timeline) if e.kind == "command_sent" and e.step == "b"
    )
    assert h.timeline[sent_b + 1].kind == "command_sent"  # c left with b, before b's reply


def test_a_failing_group_member_compensates_the_other_members_and_earlier_steps() -> None:
    h = harness(PARALLEL)
    h.script("b", "failure")
    h.start({})
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["c", "a"]


def test_the_test_definitions_pass_their_compensation_matrix() -> None:
    assert check_compensation_matrix(PIVOTED, {}) == []
    assert check_compensation_matrix(PARALLEL, {}) == []
    assert check_compensation_matrix(READ_ONLY, {}) == []


def test_the_matrix_catches_an_engine_that_compensates_on_a_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine as it was before resolving: an unknown outcome counted as lost, and
    compensated when it could be. The matrix must report both ways that goes wrong."""

    def guess(decision: core.Decision, step: Step, state: core.StepState, cause: None) -> None:
        state.status = StepStatus.SUCCEEDED if step.compensation else StepStatus.FAILED
        if decision.saga.status is SagaStatus.RUNNING:
            decision.saga.move("compensate")
        core.compensate_next(decision, cause)

    monkeypatch.setattr(core, "ask_resolution", guess)
    problems = check_compensation_matrix(PIVOTED, {})
    assert any("a compensation of a was sent, but it never took effect" in p for p in problems)
    assert any("the pivot b took effect, yet the saga was compensated" in p for p in problems)


# -- definitions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((), "has no steps"),
        ((_step("a"), _step("a")), "repeats step names"),
        ((_step("a", participant="nobody"),), "unknown participant"),
        ((_step("a", build_compensation=None),), "needs both a compensation"),
        ((_step("a", command="inventory.resolve"),), "the kit's own command"),
        ((_step("a", pivot=True), _step("b", pivot=True)), "more than one pivot"),
        ((_step("a", group="g"), _step("b"), _step("c", group="g")), "must be adjacent"),
        ((_step("a", group="g", pivot=True),), "pivot cannot be in a group"),
        ((_step("a", timeout_s=0),), "positive timeouts"),
    ],
)
def test_invalid_definitions_are_refused_at_registration(
    steps: tuple[Step, ...], problem: str
) -> None:
    registry = DefinitionRegistry(participants=["inventory"])
    with pytest.raises(InvalidDefinitionError, match=problem):
        registry.register(SagaDefinition("s", 1, steps, lambda raw: dict(raw)))


def test_the_pivot_read_only_steps_and_steps_after_the_pivot_need_no_compensation() -> None:
    registry = DefinitionRegistry(participants=["inventory"])
    registry.register(PIVOTED)
    registry.register(READ_ONLY)
    assert registry.get("pivoted").pivot_index == 1
    assert registry.get("read_only").step("check").read_only


def test_registry_serves_the_newest_version_unless_one_is_named() -> None:
    registry = DefinitionRegistry()
    for version in (1, 2):
        registry.register(SagaDefinition("s", version, (_step("a"),), lambda r: dict(r)))
    assert registry.get("s").version == 2
    assert registry.get("s", 1).version == 1
    with pytest.raises(UnknownSagaTypeError, match="no version 3"):
        registry.get("s", 3)
    with pytest.raises(UnknownSagaTypeError, match="unknown saga type 'nope'"):
        registry.get("nope")
    with pytest.raises(InvalidDefinitionError, match="already registered"):
        registry.register(SagaDefinition("s", 1, (_step("a"),), lambda r: dict(r)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1},
        {"initial_backoff_s": 5, "max_backoff_s": 1},
        {"multiplier": 0.5},
        {"jitter": 1.0},
    ],
)
def test_invalid_retry_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidDefinitionError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_backoff_grows_is_capped_and_is_the_same_for_the_same_step() -> None:
    policy = RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=5, jitter=0.1)
    delays = [policy.backoff_s(n, "saga:step") for n in range(1, 6)]
    assert 0.9 <= delays[0] <= 1.1
    assert 1.8 <= delays[1] <= 2.2
    assert all(4.5 <= d <= 5.5 for d in delays[3:])
    assert delays == [policy.backoff_s(n, "saga:step") for n in range(1, 6)]
    # a resolve is asked again without end: far past where the growth overflows a float
    assert 4.5 <= policy.backoff_s(5000, "saga:step") <= 5.5


def test_an_abort_does_not_wait_on_a_read_only_step_in_flight() -> None:
    h = harness(READ_ONLY)
    h.script("check", *["no_reply"] * 3)
    h.start({})
    h.run(until=lambda h: "check" in h.actions())
    h.abort("customer cancelled")
    h.run()
    assert h.status == "compensated"
    assert h.resolutions() == []  # it changed nothing: there is nothing to ask
    assert h.compensations() == ["a"]


def test_an_applied_resolution_without_its_result_is_not_taken() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.script_resolution("charge_payment", "no_reply")
    h.start(ORDER_INPUT)
    h.run(until=lambda h: "charge_payment" in h.resolutions())
    ask = next(c for c in h.commands if c.message_type == "payment.resolve")
    for result in (["not", "an", "object"], None, "x"):
        data = {"resolution": "applied", "result": result}
        h.deliver(messages.reply_to(ask, source="payment", outcome=S, now=h.now, data=data))
        assert h.saga.steps["charge_payment"].status is StepStatus.RESOLVING
        assert h.timeline[-1].kind == "reply_ignored"
    h.run()
    assert h.status == "compensated"  # asked again; the participant fenced it


def test_a_fenced_resolution_is_fenced_whatever_else_it_carries() -> None:
    h = harness()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.script_resolution("charge_payment", "no_reply")
    h.start(ORDER_INPUT)
    h.run(until=lambda h: "charge_payment" in h.resolutions())
    ask = next(c for c in h.commands if c.message_type == "payment.resolve")
    data = {"resolution": "fenced", "result": {"chargeId": "forged"}}
    h.deliver(messages.reply_to(ask, source="payment", outcome=S, now=h.now, data=data))
    assert h.saga.steps["charge_payment"].status is StepStatus.FAILED
    assert "chargeId" not in h.saga.context
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["reserve_inventory"]
