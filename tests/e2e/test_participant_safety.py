"""The three anomalies, against the real inventory participant over Kafka: a duplicate
command, an empty compensation, and an action arriving after its own compensation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from orchestrator import codec
from orchestrator.saga import messages
from tests.e2e.orders import new_sku, stock
from tests.e2e.system import System, orchestrator_key_for, signature

pytestmark = pytest.mark.e2e


def command(saga_id: str, message_type: str, payload: dict[str, object]) -> messages.Message:
    return messages.command(
        message_type=message_type,
        saga_id=saga_id,
        saga_type="order",
        step="reserve_inventory",
        attempt=1,
        payload=payload,
        now=datetime.now(UTC),
        causation_id=None,
    )


async def exchange(
    system: System, commands: list[messages.Message], replies: int
) -> list[messages.Message]:
    """Publish commands to inventory as the orchestrator would; collect the replies."""
    servers = system.kafka.split(",")
    consumer = AIOKafkaConsumer(
        system.namespace + ".replies",
        bootstrap_servers=servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await consumer.start()
    await producer.start()
    saga_ids = {c.saga_id for c in commands}
    try:
        for c in commands:
            value = codec.encode(c)
            await producer.send_and_wait(
                system.namespace + ".inventory.commands",
                value,
                key=c.saga_id.encode(),
                headers=[signature(value, orchestrator_key_for("inventory"))],
            )
        got: list[messages.Message] = []
        async with asyncio.timeout(30):
            async for record in consumer:
                if (record.key or b"").decode() not in saga_ids:
                    continue  # other tests' messages, poison included, share the topic
                got.append(codec.decode(record.value))
                if len(got) == replies:
                    return got
    finally:
        await producer.stop()
        await consumer.stop()
    raise AssertionError("unreachable")


def reserve(saga_id: str, sku: str) -> messages.Message:
    return command(
        saga_id, "inventory.reserve", {"orderId": "o-1", "items": [{"sku": sku, "quantity": 4}]}
    )


async def test_a_duplicate_command_gets_the_stored_reply_and_is_applied_once(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    once = reserve(messages.new_id(), sku)

    first, second = await exchange(system, [once, once], replies=2)

    assert first == second  # the very same reply, message id included
    assert first.outcome is messages.Outcome.SUCCESS
    assert stock(system, sku) == 6


async def test_an_empty_compensation_succeeds_and_the_late_action_is_refused(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    saga_id = messages.new_id()
    release = command(saga_id, "inventory.release", {"orderId": "o-1"})

    released, late = await exchange(system, [release, reserve(saga_id, sku)], replies=2)

    assert released.outcome is messages.Outcome.SUCCESS
    assert released.data == {"empty": True}
    assert late.outcome is messages.Outcome.FAILURE
    assert late.error["code"] == "fenced"
    assert stock(system, sku) == 10  # no hanging reservation
    assert (
        system.scalar("SELECT state FROM inventory.step_ledger WHERE saga_id = %s", saga_id)
        == "tombstone"
    )


async def test_a_resolve_answers_from_the_ledger_and_fences_an_action_not_applied(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    applied, fenced = messages.new_id(), messages.new_id()
    resolve_applied = command(applied, "inventory.resolve", {"command": "inventory.reserve"})
    resolve_fenced = command(fenced, "inventory.resolve", {"command": "inventory.reserve"})

    replies = await exchange(
        system,
        [reserve(applied, sku), resolve_applied, resolve_fenced, reserve(fenced, sku)],
        replies=4,
    )

    by_type = {(r.saga_id, r.message_type): r for r in replies}
    reserved = by_type[applied, "inventory.reserve.reply"]
    assert by_type[applied, "inventory.resolve.reply"].data == {
        "resolution": "applied",
        "result": reserved.data,
    }
    assert by_type[fenced, "inventory.resolve.reply"].data == {
        "resolution": "fenced",
        "compensated": False,
    }
    assert by_type[fenced, "inventory.reserve.reply"].error["code"] == "fenced"
    assert stock(system, sku) == 6  # the reservation applied, the fenced one never
