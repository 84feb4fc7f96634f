"""A producer the broker no longer accepts (its sequence numbers lost) is replaced."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import OutOfOrderSequenceNumber

from orchestrator.transport import producer as producer_module
from orchestrator.transport.producer import Publisher, Record


class FakeProducer:
    """Like AIOKafkaProducer: `send` returns a future the broker's answer resolves."""

    made: list[FakeProducer] = []  # noqa: RUF012
    refuse_first = True

    def __init__(self, **config: Any) -> None:
        self.sent: list[bytes] = []
        self.stopped = False
        self.refuses = FakeProducer.refuse_first
        FakeProducer.refuse_first = False
        FakeProducer.made.append(self)

    async def start(self) -> None: ...

    async def stop(self) -> None:
        self.stopped = True

    async def send(
        self, topic: str, value: bytes, key: bytes, headers: Any
    ) -> asyncio.Future[None]:
        answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.refuses:
            answer.set_exception(OutOfOrderSequenceNumber())
        else:
            self.sent.append(value)
            answer.set_result(None)
        return answer


async def test_a_producer_with_lost_sequence_numbers_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(producer_module, "AIOKafkaProducer", FakeProducer)
    FakeProducer.made, FakeProducer.refuse_first = [], True
    publisher = Publisher("broker:9092", "test")
    records = [Record("t", "k", b"1"), Record("t", "k", b"2")]

    with pytest.raises(OutOfOrderSequenceNumber):
        await publisher.publish(records)
    await publisher.publish(records)  # what the caller's retry does

    first, second = FakeProducer.made
    assert first.stopped
    assert second.sent == [b"1", b"2"]
