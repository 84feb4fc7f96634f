import pytest

from orchestrator.saga import messages
from orchestrator.saga import saga as core
from orchestrator.saga.errors import OperatorActionRefusedError
from orchestrator.saga.machine import StepStatus
from orchestrator.sagas import order
from orchestrator.testing import SagaHarness
from tests.unit.test_saga import ORDER_INPUT, PIVOTED


def started(definition=order.DEFINITION) -> SagaHarness:  # type: ignore[no-untyped-def]
    h = SagaHarness(definition)
    h.start(ORDER_INPUT if definition is order.DEFINITION else {})
    return h


def test_abort_compensates_what_ran_and_what_is_in_flight() -> None:
    h = started()
    h.run(until=lambda h: "charge_payment" in h.actions())  # reserved; the charge in flight
    h.abort("customer cancelled", actor="ops@example.com")
    h.run()
    assert h.status == "compensated"
    assert h.compensations() == ["charge_payment", "reserve_inventory"]
    entry = next(e for e in h.timeline if e.kind == "operator_abort")
    assert entry.detail == {"actor": "ops@example.com", "reason": "customer cancelled"}
    assert h.saga.steps["create_shipment"].status is StepStatus.PENDING


def test_a_repeated_abort_changes_nothing() -> None:
    h = started()
    h.abort()
    before = (len(h.timeline), len(h.commands))
    h.abort()
    assert (len(h.timeline), len(h.commands)) == before


def test_abort_after_the_pivot_or_at_the_end_is_refused() -> None:
    h = started(PIVOTED)
    h.run(until=lambda h: "c" in h.actions())
    with pytest.raises(OperatorActionRefusedError, match="passed its pivot"):
        h.abort()
    h.run()
    with pytest.raises(OperatorActionRefusedError, match="already completed"):
        h.abort()


def test_retry_of_a_failed_compensation_runs_it_again_and_finishes() -> None:
    h = SagaHarness(order.DEFINITION)
    h.script("charge_payment", "failure")
    h.script_compensation("reserve_inventory", *["failure"] * 5)
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "failed"
    h.retry("inventory fixed")
    h.run()
    assert h.status == "compensated"
    assert h.compensations().count("reserve_inventory") == 6
    with pytest.raises(OperatorActionRefusedError, match="already compensated"):
        h.retry()


def test_retry_after_the_pivot_sends_the_lost_step_again() -> None:
    h = SagaHarness(PIVOTED)
    h.script("c", "failure")
    h.start({})
    h.run()
    assert h.status == "failed"
    h.retry("participant fixed")
    h.run()
    assert h.status == "completed"
    assert h.actions() == ["a", "b", "c", "c"]


def test_skip_marks_a_stuck_compensation_done_and_the_saga_goes_on() -> None:
    h = SagaHarness(order.DEFINITION)
    h.script("create_shipment", "failure")
    h.script_compensation("charge_payment", *["failure"] * 5)
    h.start(ORDER_INPUT)
    h.run()
    assert h.status == "failed"
    with pytest.raises(OperatorActionRefusedError, match="only a failed saga's stuck"):
        h.skip("reserve_inventory")
    h.skip("charge_payment", "refunded by hand in the provider's console")
    h.run()
    assert h.status == "compensated"
    assert h.compensations()[-1] == "reserve_inventory"
    assert h.saga.steps["charge_payment"].status is StepStatus.COMPENSATED


def test_attempts_go_on_counting_across_a_retry_so_a_stale_reply_is_refused() -> None:
    h = SagaHarness(PIVOTED)
    h.script("c", "failure")
    h.start({})
    h.run()
    first = [m for m in h.commands if m.step == "c"][-1]
    h.retry("participant fixed")
    again = [m for m in h.commands if m.step == "c"][-1]
    assert (first.attempt, again.attempt) == (1, 2)

    stale = messages.reply_to(
        first,
        source="c",
        outcome=messages.Outcome.FAILURE,
        now=h.now,
        error_code="declined",
        error_message="the answer to the first attempt, arriving late",
    )
    h.deliver(stale)

    assert h.saga.steps["c"].status is StepStatus.SENT
    assert h.dead_lettered[-1][0] is stale
    assert h.timeline[-1].kind == "command_sent"
    h.run()
    assert h.status == "completed"


def test_a_retry_gives_a_fresh_budget_though_the_numbers_go_on() -> None:
    h = SagaHarness(PIVOTED)
    budget = PIVOTED.step("c").retry.max_attempts
    h.script("c", *["retryable"] * budget)
    h.start({})
    h.run()
    assert h.status == "failed"
    h.script("c", *["retryable"] * (budget - 1))
    h.retry("once more")
    h.run()
    assert h.status == "completed"
    assert [m.attempt for m in h.commands if m.step == "c"] == list(range(1, 2 * budget + 1))


def test_retry_resumes_the_timers_of_a_parked_saga() -> None:
    h = started()
    parked, _ = core.park(h.saga, "its definition was missing on the worker")
    h._saga = parked
    assert h.saga.wake_at is None
    h.retry("definition deployed")
    assert h.saga.parked is None
    assert h.saga.wake_at is not None
    assert [e.kind for e in h.timeline[-2:]] == ["operator_retry", "saga_unparked"]
    h.run()
    assert h.status == "completed"


def test_an_operator_fences_a_step_whose_participant_cannot_answer_its_resolve() -> None:
    h = started()
    h.script("charge_payment", "no_reply", "no_reply", "no_reply")
    h.script_resolution("charge_payment", *["no_reply"] * 20)
    h.run(until=lambda h: h.kinds().count("resolve_unanswered") == 3)
    assert h.saga.steps["charge_payment"].status is StepStatus.RESOLVING

    h.fence("charge_payment", "payment service decommissioned, charge checked by hand")
    h.run()

    assert h.status == "compensated"
    assert h.compensations() == ["reserve_inventory"]
    assert [e.detail for e in h.timeline if e.kind == "operator_fence"] == [
        {"actor": "tester", "reason": "payment service decommissioned, charge checked by hand"}
    ]
    before = len(h.timeline)
    h.fence("charge_payment")  # fenced already: nothing new
    assert len(h.timeline) == before


def test_only_a_step_waiting_on_a_resolve_can_be_fenced() -> None:
    h = started()
    h.run(until=lambda h: "charge_payment" in h.actions())
    with pytest.raises(OperatorActionRefusedError, match="reserve_inventory' is succeeded"):
        h.fence("reserve_inventory")
    with pytest.raises(OperatorActionRefusedError, match="no step 'nope'"):
        h.fence("nope")
