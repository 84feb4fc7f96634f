"""Talking to the system's topics directly, as a misbehaving producer or an auditor would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from orchestrator.transport import dead_letters
from tests.e2e.system import System, signature


@contextlib.asynccontextmanager
async def fresh_topic(kafka: str, partitions: int = 1) -> AsyncIterator[str]:
    """A topic on the real broker for one test, deleted after it; replicated on a cluster
    (whose min.insync.replicas refuses acks=all to a single replica)."""
    replication = min(3, len(kafka.split(",")))
    name = f"test-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, replication_factor=replication)])
        try:
            yield name
        finally:
            await admin.delete_topics([name])
    finally:
        await admin.close()


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


async def every_record(servers: str, topics: list[str]) -> AsyncIterator[Any]:
    """Every record now on the topics, from the beginning of each partition to its end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers.split(","), enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.set_topics(topics)  # loads their partitions; no public way
        tps = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for r in records:
                    yield r
    finally:
        await consumer.stop()


async def _appended_at(servers: str, topics: list[str]) -> dict[str, tuple[float, int]]:
    """message id -> when the broker first took it (s since the epoch), and on which
    partition; copies come later."""
    first: dict[str, tuple[float, int]] = {}
    async for r in every_record(servers, topics):
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message_id = json.loads(r.value)["messageId"]
            taken = (r.timestamp / 1000, r.partition)
            first[message_id] = min(first.get(message_id, (math.inf, 0)), taken)
    return first


def appended_at(system: System, topics: list[str]) -> dict[str, float]:
    """message id -> when the broker first took it, over every record of the topics."""
    return {m: at for m, (at, _) in appended_where(system, topics).items()}


def appended_where(system: System, topics: list[str]) -> dict[str, tuple[float, int]]:
    """message id -> when the broker first took it and on which partition of its topic."""
    return asyncio.run(_appended_at(system.kafka, topics))
