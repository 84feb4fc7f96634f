"""Relays running side by side publish each outbox row once, and the rows of a key in the
order they were written (rows of different keys committed concurrently may pass each
other: only the order per key is promised). They share the shards, and a relay takes over
the shards of one that froze."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.ports import OUTBOX_SHARDS
from orchestrator.store import migrate
from orchestrator.store.outbox import SqlOutbox
from orchestrator.store.tables import outbox, outbox_relay_member, saga, saga_timeline
from orchestrator.store.unit_of_work import create_engine
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.relay import OutboxRelay, shards_of
from tests.conftest import service_urls
from tests.e2e.kafka import fresh_topic
from tests.fakes import CollectingPublisher


async def write(engine: AsyncEngine, writer: str, count: int) -> None:
    """Rows of three keys, one transaction after the other: as a saga's transactions are."""
    for i in range(count):
        async with engine.begin() as conn:
            row = {"topic": "t", "key": f"{writer}{i % 3}", "headers": {}, "value": b"%d" % i}
            await conn.execute(outbox.insert(), row)


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.05)


async def test_relays_side_by_side_publish_each_row_once_in_order(empty_database: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 6)
    published = CollectingPublisher()  # one log of what reached "Kafka", from both relays
    relays = [
        OutboxRelay(SqlOutbox(engine), published, batch_size=4, recover_after_s=0)
        for _ in range(2)
    ]  # type: ignore[arg-type]
    running = [asyncio.create_task(r.run()) for r in relays]
    try:
        await asyncio.gather(write(engine, "a", 25), write(engine, "b", 25))
        await until(lambda: len(published.records) >= 50, "50 rows published")
        await asyncio.sleep(0.3)  # and nothing more

        async with engine.connect() as conn:
            written = (
                await conn.execute(sa.select(outbox.c.key, outbox.c.value).order_by(outbox.c.id))
            ).all()
            left = await conn.scalar(
                sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
            )
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await engine.dispose()
    assert left == 0
    assert len(published.records) == 50
    for key in {k for k, _ in written}:
        in_order_written = [bytes(v) for k, v in written if k == key]
        assert [r.value for r in published.records if r.key == key] == in_order_written


class TimedPublisher(CollectingPublisher):
    """Keeps what it is asked to publish, and when."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def publish(self, records: Sequence[Record]) -> None:
        await super().publish(records)
        self.times += [time.monotonic()] * len(records)


async def write_keys(engine: AsyncEngine, keys: int, rounds: int) -> None:
    """`rounds` rows of each of `keys` keys, a transaction per round."""
    for i in range(rounds):
        async with engine.begin() as conn:
            rows = [
                {"topic": "t", "key": f"key-{k}", "headers": {}, "value": b"%d" % i}
                for k in range(keys)
            ]
            await conn.execute(outbox.insert(), rows)


Written = list[tuple[str, bytes]]


async def written_and_shards(engine: AsyncEngine) -> tuple[Written, dict[str, int]]:
    """The rows (key, value) in the order written, and each key's shard as the store has it."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(sa.select(outbox.c.key, outbox.c.value).order_by(outbox.c.id))
        ).all()
        shard = sa.func.hashtext(outbox.c.key).op("&")(OUTBOX_SHARDS - 1)
        shards = (await conn.execute(sa.select(outbox.c.key, shard).distinct())).all()
        return [(k, bytes(v)) for k, v in rows], dict(shards)


def assert_each_once_in_order_per_key(written: Written, published: list[Record]) -> None:
    assert sorted((r.key, r.value) for r in published) == sorted(written)
    for key in {k for k, _ in written}:
        in_order_written = [v for k, v in written if k == key]
        assert [r.value for r in published if r.key == key] == in_order_written


async def members(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(outbox_relay_member)))


async def test_two_relays_share_the_shards_each_publishing_its_own(empty_database: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 6)
    lease_s = 2.0
    publishers = [CollectingPublisher(), CollectingPublisher()]
    relays = [
        OutboxRelay(
            SqlOutbox(engine),
            publisher,  # type: ignore[arg-type]
            batch_size=8,
            poll_interval_s=0.1,
            lease_s=lease_s,
            recover_after_s=0,
        )
        for publisher in publishers
    ]
    running = [asyncio.create_task(r.run()) for r in relays]
    try:
        deadline = time.monotonic() + 10
        while await members(engine) < 2:
            assert time.monotonic() < deadline, "gave up waiting for both relays to join"
            await asyncio.sleep(0.05)
        await asyncio.sleep(lease_s / 3 + 0.3)  # the first to join has seen the second

        await write_keys(engine, keys=40, rounds=3)
        await until(lambda: sum(len(p.records) for p in publishers) >= 120, "120 rows")
        await asyncio.sleep(0.3)  # and nothing more
        written, shard_of = await written_and_shards(engine)
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await engine.dispose()
    assert_each_once_in_order_per_key(written, [r for p in publishers for r in p.records])
    owners = [r.owner for r in relays]
    for relay, publisher in zip(relays, publishers, strict=True):
        assert publisher.records, f"{relay.owner} published nothing"
        own = set(shards_of(relay.owner, owners))
        assert {shard_of[r.key] for r in publisher.records} <= own


async def test_a_relay_takes_over_the_shards_of_one_that_froze(empty_database: str) -> None:
    """The frozen relay ran one round and then nothing: it neither left nor released its
    leases, as a process that hangs or is killed without a goodbye."""
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 6)
    lease_s = 1.0
    await write_keys(engine, keys=40, rounds=3)
    frozen_published, survivor_published = CollectingPublisher(), TimedPublisher()
    frozen = OutboxRelay(
        SqlOutbox(engine),
        frozen_published,  # type: ignore[arg-type]
        batch_size=5,
        lease_s=lease_s,
        recover_after_s=0,
    )
    survivor = OutboxRelay(
        SqlOutbox(engine),
        survivor_published,  # type: ignore[arg-type]
        batch_size=8,
        poll_interval_s=0.1,
        lease_s=lease_s,
        recover_after_s=0,
    )
    froze_at = time.monotonic()
    assert await frozen.relay_once() == (5, 0)  # it took every shard's lease it had rows of
    running = asyncio.create_task(survivor.run())
    try:
        await until(lambda: len(survivor_published.records) >= 115, "the other 115 rows")
        await asyncio.sleep(0.3)  # and nothing more
        written, shard_of = await written_and_shards(engine)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await engine.dispose()
    assert_each_once_in_order_per_key(
        written, [*frozen_published.records, *survivor_published.records]
    )
    frozens = set(shards_of(frozen.owner, [frozen.owner, survivor.owner]))
    taken_over_after = [
        at - froze_at
        for record, at in zip(survivor_published.records, survivor_published.times, strict=True)
        if shard_of[record.key] in frozens
    ]
    assert taken_over_after, "no row of the frozen relay's shards was left to take over"
    assert min(taken_over_after) >= 0.9 * lease_s  # not while it was still seen alive


async def read_topic(kafka: str, topic: str, timeout_s: float = 15) -> list[bytes]:
    """Every value on the topic's one partition, from its beginning to its end now."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.split(","), auto_offset_reset="earliest")
    await consumer.start()
    partition = TopicPartition(topic, 0)
    values: list[bytes] = []
    try:
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        async with asyncio.timeout(timeout_s):
            while await consumer.position(partition) < end:
                record = await consumer.getone(partition)
                assert record.value is not None
                values.append(record.value)
    finally:
        await consumer.stop()
    return values


async def insert_saga(engine: AsyncEngine) -> str:
    saga_id = str(uuid.uuid4())
    async with engine.begin() as conn:
        await conn.execute(
            saga.insert(),
            {
                "id": saga_id,
                "type": "order",
                "definition_version": 1,
                "status": "running",
                "input": {},
                "context": {},
                "version": 1,
            },
        )
    return saga_id


async def insert_rows(engine: AsyncEngine, rows: list[tuple[str, str, bytes]]) -> list[int]:
    """Outbox rows (topic, key, value), one transaction, in this order."""
    async with engine.begin() as conn:
        return [
            await conn.scalar(
                outbox.insert().returning(outbox.c.id),
                {"topic": topic, "key": key, "headers": {}, "value": value},
            )
            for topic, key, value in rows
        ]


async def outbox_row(engine: AsyncEngine, row_id: int) -> sa.RowMapping:
    async with engine.connect() as conn:
        query = sa.select(outbox).where(outbox.c.id == row_id)
        return (await conn.execute(query)).mappings().one()


async def saga_parking(engine: AsyncEngine, saga_id: str) -> tuple[str | None, list[Any]]:
    """The saga's parked reason, and the details of its `message_parked` timeline entries."""
    async with engine.connect() as conn:
        reason = await conn.scalar(sa.select(saga.c.parked_reason).where(saga.c.id == saga_id))
        details = await conn.scalars(
            sa.select(saga_timeline.c.detail).where(
                saga_timeline.c.saga_id == saga_id, saga_timeline.c.kind == "message_parked"
            )
        )
        return reason, list(details)


async def until_row(
    engine: AsyncEngine, row_id: int, condition: Callable[[sa.RowMapping], bool], what: str
) -> sa.RowMapping:
    deadline = time.monotonic() + 15
    while not condition(row := await outbox_row(engine, row_id)):
        assert time.monotonic() < deadline, f"gave up waiting for {what}: {dict(row)}"
        await asyncio.sleep(0.05)
    return row


@pytest.fixture
async def engine(empty_database: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(migrate.upgrade, empty_database)
    engine = create_engine(empty_database, 4)
    yield engine
    await engine.dispose()


@contextlib.asynccontextmanager
async def relaying(engine: AsyncEngine, **options: Any) -> AsyncIterator[None]:
    """A real relay on the real broker runs in a task until the block ends."""
    _, kafka = service_urls()
    publisher = Publisher(kafka, "test-relay")
    relay = OutboxRelay(SqlOutbox(engine), publisher, recover_after_s=0, **options)
    running = asyncio.create_task(relay.run())
    try:
        yield
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await publisher.stop()


async def test_an_oversized_row_is_parked_and_the_next_one_is_published(
    engine: AsyncEngine,
) -> None:
    _, kafka = service_urls()
    async with fresh_topic(kafka) as topic:
        saga_id = await insert_saga(engine)
        big = b"x" * 1_100_000  # more than the producer's 1 MiB max request size
        big_id, normal_id = await insert_rows(
            engine, [(topic, saga_id, big), (topic, saga_id, b"after the big one")]
        )
        async with relaying(engine, poll_interval_s=0.2):
            await until_row(engine, normal_id, lambda r: r.published_at is not None, "it")
            big_row = await until_row(
                engine, big_id, lambda r: r.parked_at is not None, "the big row parked"
            )
        on_topic = await read_topic(kafka, topic)
    reason, parked_entries = await saga_parking(engine, saga_id)
    assert on_topic == [b"after the big one"]  # once: it was not sent again
    assert big_row.parked_at is not None
    assert big_row.published_at is None
    assert "MessageSizeTooLarge" in (big_row.last_error or ""), big_row.last_error
    assert "MessageSizeTooLarge" in (reason or ""), reason
    assert [d["outbox_id"] for d in parked_entries] == [big_id]


async def test_a_row_for_a_missing_topic_holds_up_no_other_and_is_parked_after_its_attempts(
    engine: AsyncEngine,
) -> None:
    _, kafka = service_urls()
    missing = f"test-relay-missing-{uuid.uuid4().hex[:10]}"
    async with fresh_topic(kafka) as topic:
        saga_id = await insert_saga(engine)
        lost_id, normal_id = await insert_rows(
            engine, [(missing, saga_id, b"to nowhere"), (topic, saga_id, b"to somewhere")]
        )
        async with relaying(engine, poll_interval_s=0.2, max_attempts=2):
            started = time.monotonic()
            await until_row(engine, normal_id, lambda r: r.published_at is not None, "it")
            normal_after_s = time.monotonic() - started
            lost = await until_row(
                engine, lost_id, lambda r: r.parked_at is not None, "the lost row parked"
            )
        on_topic = await read_topic(kafka, topic)
    reason, parked_entries = await saga_parking(engine, saga_id)
    assert normal_after_s < 5, f"the normal row waited {normal_after_s:.1f}s on the missing topic"
    assert on_topic == [b"to somewhere"]  # once: it was not sent again
    assert lost.published_at is None
    assert lost.attempts == 2
    assert "UnknownTopicOrPartition" in (lost.last_error or ""), lost.last_error
    assert missing in (reason or ""), reason
    assert [d["outbox_id"] for d in parked_entries] == [lost_id]
