"""Talking to the system's topics directly, as a misbehaving producer or an auditor would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orchestrator.transport import dead_letters
from tests.e2e.system import System, signature


async def _publish(
    system: System, topic: str, records: Sequence[tuple[bytes, bytes]], signed_by: str | None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=system.kafka.split(","), acks="all")
    await producer.start()
    try:
        for key, value in records:
            headers = [signature(value, signed_by)] if signed_by else []
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def publish(
    system: System,
    topic: str,
    records: Sequence[tuple[bytes, bytes]],
    signed_by: str | None = None,
) -> None:
    """Publish records as they are, each signed with the test key of `signed_by` if given."""
    asyncio.run(_publish(system, topic, records, signed_by))


def dead(system: System, topic: str) -> list[dead_letters.DeadLetter]:
    return asyncio.run(dead_letters.read(system.kafka, topic))


async def _first(system: System, topic: str, key: bytes, timeout_s: float) -> bytes:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=system.kafka.split(","),
        group_id=f"peek-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout_s):
            async for record in consumer:
                if record.key == key and record.value is not None:
                    value: bytes = record.value
                    return value
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


def first(system: System, topic: str, key: str, timeout_s: float = 30) -> bytes:
    """The first record of `topic` with this key."""
    return asyncio.run(_first(system, topic, key.encode(), timeout_s))
