"""Whatever a record holds, applying it ends: applied, retried while the fault is transient,
or dead-lettered with the reason. Nothing escapes to crash the agent."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka import errors as kafka
from psycopg import errors as pg
from sqlalchemy import exc as sa_exc

from orchestrator.saga import messages
from orchestrator.transport.consumer import Consumed, apply
from orchestrator.transport.producer import Record
from tests.fakes import CollectingPublisher
from tests.unit.test_consumer_batch import record


class RefusingPublisher(CollectingPublisher):
    """Refuses records with a value, as a broker refuses one over its size limit."""

    async def publish(self, records: Sequence[Record]) -> None:
        if any(r.value for r in records):
            raise kafka.MessageSizeTooLargeError()
        await super().publish(records)


def data_error() -> sa_exc.DBAPIError:
    orig = pg.UntranslatableCharacter("unsupported Unicode escape sequence")
    wrapped: sa_exc.DBAPIError = sa_exc.DBAPIError.instance("INSERT ...", {}, orig, pg.Error)
    return wrapped


def headers(letter: Record) -> dict[str, str]:
    return {k: v.decode() for k, v in letter.headers}


@pytest.mark.parametrize(
    "error",
    [RecursionError("deep"), OverflowError("big"), data_error(), KeyError("missing")],
    ids=repr,
)
async def test_any_error_of_a_handler_dead_letters_the_record_with_the_reason(
    error: Exception,
) -> None:
    publisher = CollectingPublisher()

    async def handle(message: messages.Message) -> None:
        raise error

    consumed = record(7)
    await apply(consumed, handle, publisher)  # type: ignore[arg-type]

    [letter] = publisher.records
    assert letter.topic == "t.dlq"
    assert letter.value == consumed.value
    assert type(error).__name__ in headers(letter)["failure_reason"]
    assert headers(letter)["original_offset"] == "7"


async def test_a_failing_dead_letter_hook_does_not_stop_the_consumer() -> None:
    publisher = CollectingPublisher()
    hooked = []

    async def handle(message: messages.Message) -> None:
        raise ValueError("poison")

    async def hook(message: messages.Message, reason: str, consumed: Consumed) -> None:
        hooked.append(reason)
        raise data_error()

    await apply(record(1), handle, publisher, hook)  # type: ignore[arg-type]

    assert len(publisher.records) == 1
    assert hooked == ["handler failed: ValueError: poison"]


async def test_a_letter_the_broker_refuses_goes_without_its_value_and_says_why() -> None:
    publisher = RefusingPublisher()

    await apply(Consumed("t", 2, 9, b"k", b"x" * 100, []), _never, publisher)  # type: ignore[arg-type]

    [letter] = publisher.records
    assert letter.value == b""
    assert headers(letter)["original_offset"] == "9"
    assert "MessageSizeTooLargeError" in headers(letter)["value_omitted"]
    assert "not JSON" in headers(letter)["failure_reason"]


async def test_a_reason_with_a_nul_reaches_the_letter_without_it() -> None:
    publisher = CollectingPublisher()

    async def handle(message: messages.Message) -> None:
        raise ValueError("step 'a\x00b' is unknown")

    await apply(record(1), handle, publisher)  # type: ignore[arg-type]

    assert "\x00" not in headers(publisher.records[0])["failure_reason"]


async def _never(message: messages.Message) -> None:
    raise AssertionError("an undecodable record reached the handler")
