import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.ports import Refused
from orchestrator.saga import messages
from orchestrator.saga.definition import DefinitionRegistry
from orchestrator.saga.errors import (
    IdempotencyConflictError,
    InputTooLargeError,
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
    return FakeDatabase(FixedClock())


@pytest.fixture
def service(db: FakeDatabase) -> SagaService:
    return SagaService(db, build_registry(), topic_of)


def reply_to_last_command(db: FakeDatabase, outcome: messages.Outcome) -> messages.Message:
    command = [p.message for p in db.outbox if p.message.kind is messages.Kind.COMMAND][-1]
    return messages.reply_to(
        command, source=command.message_type.split(".")[0], outcome=outcome, now=NOW
    )


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


def last_command_of(db: FakeDatabase, saga_id: str) -> messages.Message:
    return [
        p.message
        for p in db.outbox
        if p.message.kind is messages.Kind.COMMAND and p.message.saga_id == saga_id
    ][-1]


async def test_a_batch_applies_its_replies_in_order_and_stores_each_saga_once(
    db: FakeDatabase, service: SagaService
) -> None:
    a, _ = await service.start_saga("order", ORDER_INPUT)
    b, _ = await service.start_saga("order", ORDER_INPUT)
    reserved = messages.reply_to(
        last_command_of(db, a.id), source="inventory", outcome=messages.Outcome.SUCCESS, now=NOW
    )
    refused = messages.reply_to(
        last_command_of(db, b.id), source="inventory", outcome=messages.Outcome.FAILURE, now=NOW
    )
    again = messages.reply_to(  # the same command answered twice: the second one is late
        last_command_of(db, a.id), source="inventory", outcome=messages.Outcome.SUCCESS, now=NOW
    )
    sent_before = len(db.outbox)

    outcomes = await service.handle_replies([reserved, refused, reserved, again])

    assert outcomes == [
        ReplyOutcome.APPLIED,
        ReplyOutcome.APPLIED,
        ReplyOutcome.DUPLICATE,
        ReplyOutcome.APPLIED,
    ]
    assert (db.sagas[a.id].version, db.sagas[b.id].version) == (2, 2)
    assert db.sagas[b.id].status == "compensated"
    assert [(p.message.saga_id, p.message.message_type) for p in db.outbox[sent_before:]] == [
        (a.id, "payment.charge"),
        (b.id, "saga.compensated"),
    ]
    kinds = [e.kind for saga_id, e in db.timeline if saga_id == a.id]
    assert kinds[-1] == "late_reply"


async def test_a_reply_to_another_command_is_refused_and_the_rest_of_its_batch_applies(
    db: FakeDatabase, service: SagaService
) -> None:
    a, _ = await service.start_saga("order", ORDER_INPUT)
    b, _ = await service.start_saga("order", ORDER_INPUT)
    good = messages.reply_to(
        last_command_of(db, a.id), source="inventory", outcome=messages.Outcome.SUCCESS, now=NOW
    )
    late = dataclasses.replace(  # answers a command the step no longer waits for
        messages.reply_to(
            last_command_of(db, b.id),
            source="inventory",
            outcome=messages.Outcome.SUCCESS,
            now=NOW,
        ),
        causation_id=messages.new_id(),
    )

    outcomes = await service.handle_replies([late, good])

    assert outcomes[1] == ReplyOutcome.APPLIED
    assert isinstance(outcomes[0], Refused)
    assert "the command last sent for step reserve_inventory" in outcomes[0].reason
    assert (db.sagas[a.id].version, db.sagas[b.id].version) == (2, 1)
    assert late.message_id not in db.processed  # a copy is refused again, and dead-lettered
    noted = [(e.kind, e.message_id) for saga_id, e in db.timeline if saga_id == b.id]
    assert noted[-1] == ("message_dead_lettered", late.message_id)


async def test_a_batch_with_a_reply_it_cannot_apply_stores_none_of_it(
    db: FakeDatabase, service: SagaService
) -> None:
    a, _ = await service.start_saga("order", ORDER_INPUT)
    good = reply_to_last_command(db, messages.Outcome.SUCCESS)
    stray = dataclasses.replace(good, message_id=messages.new_id(), saga_id=messages.new_id())
    sent_before = len(db.outbox)

    with pytest.raises(SagaNotFoundError):
        await service.handle_replies([good, stray])

    assert good.message_id not in db.processed
    assert db.sagas[a.id].version == 1
    assert len(db.outbox) == sent_before


async def test_due_timers_fire_once_and_resend_the_command(
    db: FakeDatabase, service: SagaService
) -> None:
    clock = MovableClock()
    db.clock = clock
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


async def test_a_saga_of_a_type_this_worker_lacks_is_left_alone_however_late(
    db: FakeDatabase, service: SagaService
) -> None:
    clock = MovableClock()
    db.clock = clock
    ghost, _ = await service.start_saga("order", ORDER_INPUT)
    db.sagas[ghost.id].type = "retired"  # a type this worker has no definition for
    good, _ = await service.start_saga("order", ORDER_INPUT)
    due_at = db.sagas[ghost.id].wake_at
    started = [e for saga_id, e in db.timeline if saga_id == ghost.id]
    clock.at += timedelta(seconds=31)  # past both reservations' deadlines

    assert await service.fire_timers() == 1  # the good one; the ghost is another worker's
    clock.at += timedelta(days=1)  # no worker with its definition runs
    assert await service.fire_timers() == 1  # the good one's retry, and still not the ghost

    stored = db.sagas[ghost.id]
    assert stored.parked is None
    assert stored.wake_at == due_at  # still due, for the worker that has its definition
    assert stored.version == 1
    assert [e for saga_id, e in db.timeline if saga_id == ghost.id] == started
    assert db.sagas[good.id].steps["reserve_inventory"].attempt == 2
    assert (good.id, "step_timed_out") in [(saga_id, e.kind) for saga_id, e in db.timeline]


async def test_a_saga_whose_payload_builder_raises_is_parked_at_once(
    db: FakeDatabase, service: SagaService
) -> None:
    clock = MovableClock()
    db.clock = clock
    definition = build_registry().get("order")
    first = definition.steps[0]
    raising = dataclasses.replace(first, build=lambda saga_input, context: {"n": 1 / 0})
    registry = DefinitionRegistry()
    registry.register(dataclasses.replace(definition, steps=(raising, *definition.steps[1:])))
    saga, _ = await service.start_saga("order", ORDER_INPUT)
    broken = SagaService(db, registry, topic_of)
    clock.at += timedelta(seconds=31)
    assert await broken.fire_timers() == 1  # timed out: a retry is scheduled
    clock.at += timedelta(seconds=60)

    assert await broken.fire_timers() == 1  # the retry builds its payload, which raises

    assert db.sagas[saga.id].parked is not None
    assert "ZeroDivisionError" in db.sagas[saga.id].parked
    assert db.sagas[saga.id].steps["reserve_inventory"].status == "retry_wait"  # unchanged
    assert await broken.fire_timers() == 0


async def test_an_input_whose_commands_would_outgrow_the_broker_is_refused(
    db: FakeDatabase,
) -> None:
    small = SagaService(db, build_registry(), topic_of, max_input_bytes=100)
    with pytest.raises(InputTooLargeError, match="at most 100 are taken"):
        await small.start_saga("order", ORDER_INPUT)
    assert db.sagas == {}
