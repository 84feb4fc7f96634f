"""A batch is applied together, or record by record when one of its records is poison."""

from datetime import UTC, datetime

import pytest

from orchestrator import codec
from orchestrator.ports import Refused
from orchestrator.saga import messages
from orchestrator.saga.errors import ConcurrencyConflictError, SagaNotFoundError
from orchestrator.transport.consumer import Consumed, apply_batch

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def record(offset: int, value: bytes | None = None) -> Consumed:
    if value is None:
        message = messages.command(
            message_type="inventory.reserve",
            saga_id=messages.new_id(),
            saga_type="order",
            step="reserve_inventory",
            attempt=1,
            payload={},
            now=NOW,
            causation_id=None,
        )
        value = codec.encode(message)
    return Consumed("t", 0, offset, b"k", value, [])


class Calls:
    def __init__(self, fail_with: list[Exception] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.one_by_one: list[int] = []
        self._fail_with = fail_with or []

    async def handle_many(self, batch: list[messages.Message]) -> None:
        self.batches.append([m.message_id for m in batch])
        if self._fail_with:
            raise self._fail_with.pop(0)

    async def apply_one(self, consumed: Consumed) -> None:
        self.one_by_one.append(consumed.offset)


async def test_well_formed_records_are_handled_together_in_order() -> None:
    calls = Calls()
    records = [record(i) for i in range(3)]

    await apply_batch(records, calls.handle_many, calls.apply_one)

    assert calls.batches == [[codec.decode(r.value).message_id for r in records]]
    assert calls.one_by_one == []


@pytest.mark.parametrize(
    "poison", [SagaNotFoundError("no saga"), RuntimeError("handler bug")], ids=repr
)
async def test_a_batch_that_cannot_be_applied_is_applied_record_by_record(
    poison: Exception,
) -> None:
    calls = Calls(fail_with=[poison])

    await apply_batch([record(i) for i in range(3)], calls.handle_many, calls.apply_one)

    assert len(calls.batches) == 1
    assert calls.one_by_one == [0, 1, 2]


async def test_an_undecodable_record_sends_the_batch_record_by_record() -> None:
    calls = Calls()

    await apply_batch([record(0), record(1, b"{not json"), record(2)], calls.handle_many,
                      calls.apply_one)  # fmt: skip

    assert calls.batches == []
    assert calls.one_by_one == [0, 1, 2]


async def test_a_transient_fault_retries_the_whole_batch() -> None:
    calls = Calls(fail_with=[ConcurrencyConflictError("moved on")])

    await apply_batch([record(0), record(1)], calls.handle_many, calls.apply_one)

    assert len(calls.batches) == 2
    assert calls.batches[0] == calls.batches[1]
    assert calls.one_by_one == []


async def test_a_record_the_handler_refused_goes_to_refuse_and_the_batch_stands() -> None:
    records = [record(i) for i in range(3)]
    handled: list[str] = []
    refused: list[tuple[int, str]] = []

    async def handle_many(batch: list[messages.Message]) -> list[object]:
        handled.extend(m.message_id for m in batch)
        return ["applied", Refused("late or replayed"), "applied"]

    async def refuse(consumed: Consumed, reason: str) -> None:
        refused.append((consumed.offset, reason))

    async def apply_one(consumed: Consumed) -> None:
        raise AssertionError("the batch stood: nothing goes one by one")

    await apply_batch(records, handle_many, apply_one, refuse=refuse)

    assert handled == [codec.decode(r.value).message_id for r in records]
    assert refused == [(1, "late or replayed")]
