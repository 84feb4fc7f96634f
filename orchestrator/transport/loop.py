"""The one consumer loop, shared by the worker and the participant runtime.

Each partition has a lane: the records fetched for it wait in its queue, and the lane hands
them to `apply`, as many as have arrived (up to `max_batch`), when the previous call
returned. Lanes run side by side, so one slow record holds up the sagas of its own partition
only; within a lane records keep their order, so a saga's messages are applied in the order
they were published. At low load a record goes to `apply` alone, at once; at high load many
share one call (and one transaction). A partition whose queue is full is paused at the
broker until its lane catches up.

Offsets are committed after `apply` returned (its transaction committed), every
`commit_interval_s` while there is something to commit, before partitions are taken away in
a rebalance and at shutdown. A crash between the two re-delivers the records since the last
commit; every handler is idempotent.

A rebalance stops the whole group until every member has given its partitions up, so a
revocation waits for the records in hand for `revoke_wait_s` at most: a slow handler does not
hold up every partition of every member. Records still in hand then are not committed here;
the partition's next holder applies them again and finds them done (the store's row locks
make it wait for the first transaction), as after a member that froze.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
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

METADATA_MAX_AGE_MS = 10_000


class _Lane:
    """The records of one partition, applied one call after the other."""

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.queue: deque[Consumed] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.abandoned = False  # closed without waiting for the records in hand

    def take(self, most: int) -> list[Consumed]:
        return [self.queue.popleft() for _ in range(min(most, len(self.queue)))]


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
        revoke_wait_s: float = 2.0,
        security: Mapping[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.topic = topic
        self._apply = apply
        self._max_batch = max_batch
        self._commit_interval_s = commit_interval_s
        self._idle_wait_ms = int(idle_wait_s * 1000)
        self._revoke_wait_s = revoke_wait_s
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
            # The group's leader hands out only the partitions in its own metadata, and a
            # broker that has not caught up with a new topic yet can leave the topic out of
            # it: the group then holds nothing until the leader's next refresh, which by
            # default is five minutes away.
            "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        }
        self._consumer: AIOKafkaConsumer | None = None
        self._lanes: dict[TopicPartition, _Lane] = {}
        self._applied: dict[TopicPartition, int] = {}  # next offset, applied, not committed
        self._committed: dict[TopicPartition, int] = {}
        self._commit_lock = asyncio.Lock()
        self._stopping = False
        self._batch_size = metrics.BATCH_SIZE.labels(topic)

    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    def lag(self) -> dict[TopicPartition, int]:
        """Records not yet applied per partition: the high-water mark minus what was
        applied, as of the last fetch."""
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
        consumer.subscribe([self.topic], listener=_CloseLanesOnRevoke(self))
        await consumer.start()
        self._consumer = consumer
        log.info("consumer_started", topic=self.topic, group=self._config["group_id"])
        committing = asyncio.ensure_future(self._commit_periodically())
        try:
            while not self._stopping:
                fetched = await consumer.getmany(
                    timeout_ms=self._idle_wait_ms, max_records=self._max_batch
                )
                for tp, batch in fetched.items():
                    self._enqueue(consumer, tp, batch)
        finally:
            committing.cancel()
            await self.stop()

    def _enqueue(self, consumer: AIOKafkaConsumer, tp: TopicPartition, batch: list[Any]) -> None:
        if self._stopping:  # not begun: they come again from the last commit
            return
        lane = self._lanes.get(tp)  # a closed lane is out of the map already
        if lane is None:
            lane = self._lanes[tp] = _Lane(tp)
        lane.queue.extend(
            Consumed(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers))
            for r in batch
        )
        if len(lane.queue) >= self._max_batch:  # the lane is behind: fetch no more for now
            consumer.pause(tp)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.ensure_future(self._drain(lane))

    async def _drain(self, lane: _Lane) -> None:
        """Apply the lane's records until its queue is empty or the lane is closed."""
        while lane.queue and not lane.closed:
            records = lane.take(self._max_batch)
            # Shielded: a shutdown or a revocation lets the records in hand finish (they
            # wait for this task; see _close_lanes).
            await asyncio.shield(self._apply_records(records))
            if lane.abandoned:  # its partition went on without it: not ours to commit
                return
            self._applied[lane.tp] = records[-1].offset + 1
            consumer = self._consumer
            if consumer is not None and not lane.closed and lane.tp in consumer.paused():
                consumer.resume(lane.tp)

    async def _apply_records(self, records: list[Consumed]) -> None:
        self._batch_size.observe(len(records))
        try:
            await self._apply(records)
        except Exception:  # apply() ends every record itself; this is the last guard
            log.exception("consumer_batch_failed", topic=self.topic, size=len(records))

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval_s)
            await self._commit()

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
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

    async def _close_lanes(
        self, partitions: set[TopicPartition], wait_s: float | None = None
    ) -> None:
        """Let each lane finish the records in hand, for `wait_s` at most; drop the ones it
        had not begun (they come again from the last commit, to whoever holds the partition
        next)."""
        lanes = [self._lanes.pop(tp) for tp in partitions if tp in self._lanes]
        for lane in lanes:
            lane.closed = True
            lane.queue.clear()
        busy = {
            lane.task: lane for lane in lanes if lane.task is not None and not lane.task.done()
        }
        if not busy:
            return
        _, late = await asyncio.wait(busy, timeout=wait_s)
        for task in late:
            busy[task].abandoned = True
        if late:
            log.warning(
                "lanes_left_applying",
                topic=self.topic,
                partitions=sorted(busy[t].tp.partition for t in late),
                waited_s=wait_s,
            )

    async def revoked(self, partitions: set[TopicPartition]) -> None:
        """Commit what was applied before the partitions go to another consumer."""
        await self._close_lanes(partitions, self._revoke_wait_s)
        await self._commit(partitions)
        for tp in partitions:
            self._applied.pop(tp, None)
            self._committed.pop(tp, None)

    async def stop(self) -> None:
        """Let the records in hand finish, commit their offsets, leave the group."""
        self._stopping = True
        if self._consumer is None:
            return
        await self._close_lanes(set(self._lanes))
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


class _CloseLanesOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        began = time.monotonic()
        await self._loop.revoked(set(revoked))
        log.info(
            "partitions_revoked",
            topic=self._loop.topic,
            partitions=sorted(tp.partition for tp in revoked),
            closed_in_s=round(time.monotonic() - began, 3),
        )

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info(
            "partitions_assigned",
            topic=self._loop.topic,
            partitions=sorted(tp.partition for tp in assigned),
        )
