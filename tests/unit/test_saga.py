import dataclasses
from datetime import UTC, datetime

import pytest

from orchestrator.saga import messages
from orchestrator.saga import saga as core
from orchestrator.saga.definition import DefinitionRegistry, RetryPolicy, SagaDefinition, Step
from orchestrator.saga.errors import InvalidDefinitionError, UnknownSagaTypeError
from orchestrator.saga.machine import SagaStatus, StepStatus
from orchestrator.sagas import order

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORDER_INPUT = order.validate_input(
    {
        "orderId": "o-1",
        "customerId": "c-1",
        "items": [{"sku": "SKU-RED", "quantity": 2}],
        "amount": "49.90",
        "currency": "EUR",
        "card": "4242424242424242",
        "shippingAddress": {
            "country": "DE",
            "city": "Berlin",
            "line1": "Main St 1",
            "postalCode": "10115",
        },
    }
)
SAGA_ID = "00000000-0000-4000-8000-000000000001"


def started() -> core.Decision:
    return core.start(order.DEFINITION, SAGA_ID, ORDER_INPUT, NOW)


def answer(
    decision: core.Decision,
    outcome: messages.Outcome,
    data: dict[str, str] | None = None,
) -> core.Decision:
    """Reply to the one command the last decision sent."""
    commands = [o.message for o in decision.outgoing if o.channel != core.EVENTS_CHANNEL]
    assert len(commands) == 1, commands
    reply = messages.reply_to(
        commands[0], source="test", outcome=outcome, now=NOW, data=data, error_code="nope"
    )
    return core.handle_reply(decision.saga, order.DEFINITION, reply, NOW)


def sent(decision: core.Decision) -> list[str]:
    return [o.message.message_type for o in decision.outgoing]


S, F, R = messages.Outcome.SUCCESS, messages.Outcome.FAILURE, messages.Outcome.RETRYABLE


def test_start_sends_the_first_command_and_a_started_event() -> None:
    decision = started()
    assert decision.saga.status is SagaStatus.RUNNING
    assert sent(decision) == ["saga.started", "inventory.reserve"]
    assert decision.saga.steps["reserve_inventory"].status is StepStatus.SENT
    assert [e.kind for e in decision.timeline] == ["saga_started", "command_sent"]


def test_all_steps_succeeding_completes_the_saga_with_the_context_merged() -> None:
    d = answer(started(), S, {"reservationId": "r"})
    assert sent(d) == ["payment.charge"]
    d = answer(d, S, {"chargeId": "ch-1"})
    assert sent(d) == ["shipping.create"]
    assert d.outgoing[0].message.payload["chargeId"] == "ch-1"
    d = answer(d, S, {"shipmentId": "sh-1"})
    assert d.saga.status is SagaStatus.COMPLETED
    assert sent(d) == ["saga.completed"]
    assert d.saga.context == {"reservationId": "r", "chargeId": "ch-1", "shipmentId": "sh-1"}


def test_failed_step_compensates_in_reverse_order() -> None:
    d = answer(started(), S)
    d = answer(d, S, {"chargeId": "ch-1"})
    d = answer(d, F)
    assert d.saga.status is SagaStatus.COMPENSATING
    assert d.saga.steps["create_shipment"].status is StepStatus.FAILED
    assert sent(d) == ["payment.refund"]
    assert d.outgoing[0].message.payload["chargeId"] == "ch-1"
    d = answer(d, S)
    assert sent(d) == ["inventory.release"]
    d = answer(d, S)
    assert d.saga.status is SagaStatus.COMPENSATED
    assert sent(d) == ["saga.compensated"]
    assert [s.status for s in d.saga.steps.values()] == [
        StepStatus.COMPENSATED,
        StepStatus.COMPENSATED,
        StepStatus.FAILED,
    ]


def test_first_step_failing_compensates_nothing() -> None:
    d = answer(started(), F)
    assert d.saga.status is SagaStatus.COMPENSATED
    assert sent(d) == ["saga.compensated"]


def test_retryable_reply_resends_with_the_next_attempt_until_the_budget_ends() -> None:
    d = started()
    for attempt in (2, 3):
        d = answer(d, R)
        assert sent(d) == ["inventory.reserve"]
        assert d.outgoing[0].message.attempt == attempt
    d = answer(d, R)
    assert d.saga.status is SagaStatus.COMPENSATED


def test_compensation_that_keeps_failing_leaves_the_saga_failed() -> None:
    d = answer(started(), S)
    d = answer(d, F)
    assert sent(d) == ["inventory.release"]
    for _ in range(order.DEFINITION.steps[0].compensation_retry.max_attempts - 1):
        d = answer(d, F)
        assert sent(d) == ["inventory.release"]
    d = answer(d, F)
    assert d.saga.status is SagaStatus.FAILED
    assert sent(d) == ["saga.failed"]
    assert d.timeline[-1].detail["cause"] == "compensation retries exhausted"


def test_repeated_or_stale_reply_changes_nothing() -> None:
    first = started()
    d = answer(first, S)
    again = core.handle_reply(
        d.saga,
        order.DEFINITION,
        messages.reply_to(first.outgoing[1].message, source="t", outcome=F, now=NOW),
        NOW,
    )
    assert again.outgoing == []
    assert again.saga.steps == d.saga.steps
    assert [e.kind for e in again.timeline] == ["reply_ignored"]


def test_reply_for_an_unknown_step_is_ignored() -> None:
    d = started()
    reply = messages.reply_to(d.outgoing[1].message, source="t", outcome=S, now=NOW)
    stray = dataclasses.replace(reply, step="nope")
    result = core.handle_reply(d.saga, order.DEFINITION, stray, NOW)
    assert result.timeline[0].kind == "reply_ignored"
    assert result.saga.status is SagaStatus.RUNNING


def test_handle_reply_does_not_change_the_saga_passed_in() -> None:
    d = started()
    before = d.saga.steps["reserve_inventory"].status
    answer(d, S)
    assert d.saga.steps["reserve_inventory"].status is before


def _step(name: str, **kw: object) -> Step:
    defaults: dict[str, object] = {
        "participant": "inventory",
        "command": f"{name}.do",
        "build": lambda i, c: {},
        "compensation": f"{name}.undo",
        "build_compensation": lambda i, c: {},
    }
    return Step(name=name, **{**defaults, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((), "has no steps"),
        ((_step("a"), _step("a")), "repeats step names"),
        ((_step("a", participant="nobody"),), "unknown participant"),
        ((_step("a", compensation=None), _step("b", pivot=True)), "needs a compensation"),
        ((_step("a", pivot=True), _step("b", pivot=True)), "more than one pivot"),
    ],
)
def test_invalid_definitions_are_refused_at_registration(
    steps: tuple[Step, ...], problem: str
) -> None:
    registry = DefinitionRegistry(participants=["inventory"])
    with pytest.raises(InvalidDefinitionError, match=problem):
        registry.register(SagaDefinition("s", 1, steps, lambda raw: dict(raw)))


def test_steps_after_the_pivot_need_no_compensation() -> None:
    registry = DefinitionRegistry(participants=["inventory"])
    registry.register(
        SagaDefinition(
            "s", 1, (_step("a"), _step("b", pivot=True, compensation=None)), lambda r: dict(r)
        )
    )
    assert registry.get("s").pivot_index == 1


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


def test_retry_policy_needs_one_attempt() -> None:
    with pytest.raises(InvalidDefinitionError):
        RetryPolicy(max_attempts=0)
