"""The consumer loop on the real broker: partitions are applied side by side, each in its
own order, and offsets are committed only for records that were applied."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from orchestrator.transport.consumer import Consumed
from orchestrator.transport.loop import METADATA_MAX_AGE_MS, ConsumerLoop
from tests.conftest import service_urls
from tests.e2e.kafka import fresh_topic


async def produce(kafka: str, topic: str, records: list[tuple[int, bytes]]) -> None:
    """(partition, value) records, in this order."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.split(","), acks="all")
    await producer.start()
    try:
        for partition, value in records:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def consuming(
    kafka: str,
    topic: str,
    group: str,
    apply: Callable[[list[Consumed]], object],
    session_timeout_s: float = 6,
) -> AsyncIterator[ConsumerLoop]:
    loop = ConsumerLoop(kafka, group, topic, apply, session_timeout_s=session_timeout_s)  # type: ignore[arg-type]
    running = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        await loop.stop()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_slow_record_holds_up_its_own_partition_only() -> None:
    _, kafka = service_urls()
    slow = asyncio.Event()
    applied: list[tuple[int, bytes]] = []

    async def apply(records: list[Consumed]) -> None:
        for record in records:
            assert record.value is not None
            if record.value == b"slow":
                await slow.wait()
            applied.append((record.partition, record.value))

    group = f"g-{uuid.uuid4().hex[:8]}"
    async with fresh_topic(kafka, 2) as topic, consuming(kafka, topic, group, apply):
        await produce(kafka, topic, [(0, b"slow"), (0, b"after-slow")])
        await produce(kafka, topic, [(1, b"a%d" % i) for i in range(20)])
        await until(lambda: len(applied) == 20, "partition 1 applied")
        assert applied == [(1, b"a%d" % i) for i in range(20)]  # nothing of partition 0 yet

        slow.set()
        await until(lambda: len(applied) == 22, "partition 0 applied")
    assert applied[20:] == [(0, b"slow"), (0, b"after-slow")]


async def test_a_slow_record_does_not_hold_up_a_rebalance() -> None:
    """A member joining takes partitions while another member's handler is still busy: the
    revocation waits for it a moment, not until it is done. Its record comes again to the
    partition's next holder (at least once, like after a member that froze)."""
    _, kafka = service_urls()
    slow = asyncio.Event()
    begun = asyncio.Event()
    applied: list[tuple[int, bytes]] = []

    async def apply(records: list[Consumed]) -> None:
        for record in records:
            assert record.value is not None
            if record.value == b"slow":
                begun.set()
                await slow.wait()
            applied.append((record.partition, record.value))

    group = f"g-{uuid.uuid4().hex[:8]}"
    # a session longer than the wait for partition 1 below: the busy member is not simply
    # dropped from the group while its revocation waits
    async with (
        fresh_topic(kafka, 2) as topic,
        consuming(kafka, topic, group, apply, session_timeout_s=45) as first,
    ):
        await until(lambda: len(first.assignment()) == 2, "both partitions assigned")
        await produce(kafka, topic, [(0, b"slow")])
        await asyncio.wait_for(begun.wait(), 20)
        async with consuming(kafka, topic, group, apply, session_timeout_s=45) as second:
            await until(lambda: bool(second.assignment()), "the joining member assigned")
            await produce(kafka, topic, [(1, b"b%d" % i) for i in range(20)])
            await until(lambda: len(applied) == 20, "partition 1 applied, the slow one held")
            assert applied == [(1, b"b%d" % i) for i in range(20)]
            slow.set()
            await until(lambda: (0, b"slow") in applied, "the slow record applied")


async def test_the_group_takes_up_partitions_its_leader_had_not_seen() -> None:
    """The group's leader assigns only what its own metadata holds; partitions it learns of
    later (here added to the topic, on a cluster also a new topic a lagging broker left out)
    are assigned at its next refresh, seconds away rather than Kafka's default five minutes."""
    _, kafka = service_urls()
    applied: list[tuple[int, bytes]] = []

    async def apply(records: list[Consumed]) -> None:
        applied.extend((record.partition, record.value or b"") for record in records)

    group = f"g-{uuid.uuid4().hex[:8]}"
    async with fresh_topic(kafka, 1) as topic, consuming(kafka, topic, group, apply) as loop:
        await until(lambda: len(loop.assignment()) == 1, "the one partition assigned")
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","))
        await admin.start()
        try:
            await admin.create_partitions({topic: NewPartitions(total_count=2)})
        finally:
            await admin.close()
        await produce(kafka, topic, [(1, b"on-the-new-partition")])
        await until(
            lambda: applied == [(1, b"on-the-new-partition")],
            "the record on the added partition applied",
            timeout_s=3 * METADATA_MAX_AGE_MS / 1000 + 20,
        )


async def test_each_partition_is_applied_once_in_its_order_under_load() -> None:
    _, kafka = service_urls()
    applied: dict[int, list[int]] = {0: [], 1: [], 2: []}

    async def apply(records: list[Consumed]) -> None:
        assert len({r.partition for r in records}) == 1, "one call, one partition"
        await asyncio.sleep(0.001 * len(records))
        applied[records[0].partition].extend(r.offset for r in records)

    async with fresh_topic(kafka, 3) as topic:
        await produce(kafka, topic, [(i % 3, b"%d" % i) for i in range(900)])
        async with consuming(kafka, topic, f"g-{uuid.uuid4().hex[:8]}", apply):
            await until(lambda: sum(map(len, applied.values())) >= 900, "900 records applied")
    assert applied == {p: list(range(300)) for p in range(3)}


async def test_records_not_begun_at_a_stop_come_again_and_applied_ones_do_not() -> None:
    _, kafka = service_urls()
    group = f"g-{uuid.uuid4().hex[:8]}"
    hold = asyncio.Event()
    first: list[bytes] = []

    async def apply_holding(records: list[Consumed]) -> None:
        await hold.wait()
        first.extend(r.value for r in records if r.value is not None)

    async with fresh_topic(kafka, 1) as topic:
        await produce(kafka, topic, [(0, b"r%d" % i) for i in range(3)])
        async with consuming(kafka, topic, group, apply_holding) as loop:
            await until(lambda: bool(loop.assignment()), "the partition assigned")
            await asyncio.sleep(1)  # the three already there came in one fetch, one call
            await produce(kafka, topic, [(0, b"r%d" % i) for i in range(3, 6)])
            await asyncio.sleep(1)  # these wait in the queue behind the held call
            stopping = asyncio.create_task(loop.stop())
            await asyncio.sleep(0.2)
            assert not stopping.done(), "a stop waits for the records in hand"
            hold.set()
            await stopping

        second: list[bytes] = []

        async def apply(records: list[Consumed]) -> None:
            second.extend(r.value for r in records if r.value is not None)

        async with consuming(kafka, topic, group, apply):
            await until(lambda: len(first) + len(second) >= 6, "every record applied")
            await asyncio.sleep(1)  # and none twice
    assert first == [b"r0", b"r1", b"r2"]
    assert second == [b"r3", b"r4", b"r5"]
