import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.saga import messages
from orchestrator.saga.errors import (
    IdempotencyConflictError,
    InvalidSagaInputError,
    SagaNotFoundError,
)
from orchestrator.sagas import build_registry
from orchestrator.service import ReplyOutcome, SagaService
from tests.fakes import FakeDatabase
from tests.unit.test_saga import ORDER_INPUT

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return NOW


def topic_of(channel: str) -> str:
    return f"ns.{channel}"


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def service(db: FakeDatabase) -> SagaService:
    return SagaService(db, build_registry(), topic_of, FixedClock())


def reply_to_last_command(db: FakeDatabase, outcome: messages.Outcome) -> messages.Message:
    command = [p.message for p in db.outbox if p.message.kind is messages.Kind.COMMAND][-1]
    return messages.reply_to(command, source="test", outcome=outcome, now=NOW)


async def test_start_stores_the_saga_and_its_first_command_together(
    db: FakeDatabase, service: SagaService
) -> None:
    saga, _ = await service.start_saga("order", ORDER_INPUT)

    assert db.sagas[saga.id].status == "running"
    assert [(p.topic, p.message.message_type) for p in db.outbox] == [
        ("ns.events", "saga.started"),
        ("ns.inventory", "inventory.reserve"),
    ]
    assert all(p.message.saga_id == saga.id for p in db.outbox)


async def test_invalid_input_stores_nothing(db: FakeDatabase, service: SagaService) -> None:
    with pytest.raises(InvalidSagaInputError) as caught:
        await service.start_saga("order", {**ORDER_INPUT, "currency": "euro"})

    assert caught.value.problems[0]["field"] == "currency"
    assert db.sagas == {}
    assert db.outbox == []


async def test_a_reply_is_applied_once(db: FakeDatabase, service: SagaService) -> None:
    saga, _ = await service.start_saga("order", ORDER_INPUT)
    reply = reply_to_last_command(db, messages.Outcome.SUCCESS)

    first = await service.handle_reply(reply)
    second = await service.handle_reply(reply)

    assert (first, second) == (ReplyOutcome.APPLIED, ReplyOutcome.DUPLICATE)
    sent = [p.message.message_type for p in db.outbox]
    assert sent.count("payment.charge") == 1
    assert db.sagas[saga.id].version == 2


async def test_reply_for_an_unknown_saga_raises_and_is_not_marked_seen(
    db: FakeDatabase, service: SagaService
) -> None:
    await service.start_saga("order", ORDER_INPUT)
    stray = reply_to_last_command(db, messages.Outcome.SUCCESS)
    stray = dataclasses.replace(stray, saga_id=messages.new_id())

    with pytest.raises(SagaNotFoundError):
        await service.handle_reply(stray)

    assert stray.message_id not in db.processed


async def test_due_timers_fire_once_and_resend_the_command(
    db: FakeDatabase, service: SagaService
) -> None:
    clock = MovableClock()
    service = SagaService(db, build_registry(), topic_of, clock)
    saga, _ = await service.start_saga("order", ORDER_INPUT)

    assert await service.fire_timers() == 0
    clock.at += timedelta(seconds=31)  # past the reservation's deadline
    assert await service.fire_timers() == 1
    clock.at += timedelta(seconds=60)  # past the retry time
    assert await service.fire_timers() == 1

    reserves = [p.message for p in db.outbox if p.message.message_type == "inventory.reserve"]
    assert [m.attempt for m in reserves] == [1, 2]
    assert db.sagas[saga.id].steps["reserve_inventory"].status == "sent"
    assert [e.kind for _, e in db.timeline][-3:] == [
        "step_timed_out",
        "retry_scheduled",
        "command_sent",
    ]


class MovableClock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


async def test_the_same_idempotency_key_and_request_return_the_same_saga(
    db: FakeDatabase, service: SagaService
) -> None:
    first, created = await service.start_saga("order", ORDER_INPUT, idempotency_key="k-1")
    again, created_again = await service.start_saga("order", ORDER_INPUT, idempotency_key="k-1")

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert len(db.sagas) == 1
    with pytest.raises(IdempotencyConflictError, match="different request"):
        await service.start_saga("order", {**ORDER_INPUT, "orderId": "o-2"}, idempotency_key="k-1")
