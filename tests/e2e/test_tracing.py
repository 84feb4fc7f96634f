"""One trace id follows a saga: from the REST request through the outbox, the commands,
the participants and their replies, into the logs."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from tests.e2e.orders import new_sku, order
from tests.e2e.system import System

pytestmark = pytest.mark.e2e


async def traceparents(system: System, saga_id: str, topics: list[str]) -> dict[str, set[str]]:
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=system.kafka.split(","),
        group_id=f"trace-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=2000,
    )
    await consumer.start()
    seen: dict[str, set[str]] = {t: set() for t in topics}
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=2000)
            if not batch:
                return seen
            for tp, records in batch.items():
                for r in records:
                    if r.key == saga_id.encode():
                        seen[tp.topic].add(dict(r.headers)["traceparent"].decode().split("-")[1])
    finally:
        await consumer.stop()


def test_the_request_trace_id_follows_the_saga_everywhere(system: System) -> None:
    trace_id = uuid.uuid4().hex
    response = system.api.post(
        "/sagas",
        json={"type": "order", "input": order(new_sku(system, 10)), "version": 1},
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    saga_id = response.json()["id"]
    assert system.wait_final(saga_id)["status"] == "completed"

    ns = system.namespace
    topics = [
        f"{ns}.replies",
        f"{ns}.events",
        f"{ns}.inventory.commands",
        f"{ns}.shipping.commands",
    ]
    seen = asyncio.run(traceparents(system, saga_id, topics))

    assert seen == {topic: {trace_id} for topic in topics}
