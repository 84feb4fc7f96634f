"""The one consumer loop, shared by the worker and the participant runtime.

Each round takes whatever the broker has for this consumer, up to `max_batch` records, and
hands it to `apply` in one piece: one record at low load, so nothing waits for company, and
many at high load, when they share one transaction. Records of a partition keep their order,
so a saga's messages are applied in the order they were published.

Offsets are committed after `apply` returned (its transaction committed), at most every
`commit_interval_s`, when the loop goes idle, before partitions are taken away in a
rebalance and at shutdown. A crash between the two re-delivers the records since the last
commit; every handler is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from orchestrator import metrics
from orchestrator.settings import Settings
from orchestrator.transport.consumer import Consumed
from orchestrator.transport.security import kafka_security

log = structlog.get_logger(__name__)

Apply = Callable[[list[Consumed]], Awaitable[None]]


class ConsumerLoop:
    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topic: str,
        apply: Apply,
        *,
        max_batch: int = 500,
        session_timeout_s: float = 30.0,
        commit_interval_s: float = 0.5,
        idle_wait_s: float = 5.0,
        security: Mapping[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.topic = topic
        self._apply = apply
        self._max_batch = max_batch
        self._commit_interval_s = commit_interval_s
        self._idle_wait_ms = int(idle_wait_s * 1000)
        self._config: dict[str, Any] = {
            **(security or {}),
            "bootstrap_servers": bootstrap_servers.split(","),
            "group_id": group_id,
            "client_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": max_batch,
            "session_timeout_ms": int(session_timeout_s * 1000),
            # three heartbeats a session: one lost to a busy moment does not end it
            "heartbeat_interval_ms": int(session_timeout_s * 1000 / 3),
            # static membership: a restarted member with the same id is given its partitions
            # back without a rebalance, instead of waiting for its old session to expire
            **({"group_instance_id": instance_id} if instance_id else {}),
            # the broker holds an empty fetch this long: an idle consumer asks twice a second
            "fetch_max_wait_ms": 500,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._applied: dict[TopicPartition, int] = {}  # next offset, applied, not committed
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = time.monotonic()
        self._batch_lock = asyncio.Lock()  # a batch and a commit never overlap
        self._stopping = False
        self._batch_size = metrics.BATCH_SIZE.labels(topic)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet applied per partition: the high-water mark minus what was
        committed, as of the last fetch."""
        consumer = self._consumer
        if consumer is None:
            return {}
        lags = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                done = self._applied.get(tp, self._committed.get(tp, 0))
                lags[tp] = max(0, highwater - done)
        return lags

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**self._config)
        consumer.subscribe([self.topic], listener=_CommitOnRevoke(self))
        await consumer.start()
        self._consumer = consumer
        log.info("consumer_started", topic=self.topic, group=self._config["group_id"])
        try:
            while not self._stopping:
                fetched = await consumer.getmany(
                    timeout_ms=self._idle_wait_ms, max_records=self._max_batch
                )
                if not fetched:
                    await self._commit()  # idle: what was applied is committed now
                    continue
                records = [
                    Consumed(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
                    for batch in fetched.values()
                    for r in batch
                ]
                # Shielded: a shutdown lets the batch in hand finish and commit (see stop()).
                await asyncio.shield(self._apply_batch(fetched, records))
                if time.monotonic() - self._last_commit >= self._commit_interval_s:
                    await self._commit()
        finally:
            await self.stop()

    async def _apply_batch(self, fetched: dict[TopicPartition, Any], records: list[Any]) -> None:
        async with self._batch_lock:
            self._batch_size.observe(len(records))
            try:
                await self._apply(records)
            except Exception:  # apply() ends every record itself; this is the last guard
                log.exception("consumer_batch_failed", topic=self.topic, size=len(records))
            for tp, batch in fetched.items():
                self._applied[tp] = batch[-1].offset + 1

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._batch_lock:
            self._last_commit = time.monotonic()
            offsets = {
                tp: offset
                for tp, offset in self._applied.items()
                if (only is None or tp in only) and self._committed.get(tp) != offset
            }
            if not offsets:
                return
            try:
                await consumer.commit(offsets)
            except Exception as exc:  # the records come again; every handler is idempotent
                log.warning("offset_commit_failed", topic=self.topic, error=repr(exc))
                return
            self._committed.update(offsets)

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Commit what was applied before the partitions go to another consumer."""
        await self._commit(partitions)
        for tp in partitions:
            self._applied.pop(tp, None)
            self._committed.pop(tp, None)

    async def stop(self) -> None:
        """Let the batch in hand finish, commit its offsets, leave the group."""
        self._stopping = True
        if self._consumer is None:
            return
        await self._commit()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()


def consuming(settings: Settings, group: str, channel: str, apply: Apply) -> ConsumerLoop:
    """The loop of this deployment's consumer group `<namespace>-<group>` on a channel."""
    return ConsumerLoop(
        settings.kafka_bootstrap_servers,
        f"{settings.topic_namespace}-{group}",
        settings.topic(channel),
        apply,
        session_timeout_s=settings.consumer_session_timeout_s,
        security=kafka_security(settings),
        instance_id=settings.instance_id or None,
    )


class _CommitOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._loop.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
