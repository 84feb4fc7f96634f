"""The Kafka producer every process publishes with: idempotent, acks=all, ordered per key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    KafkaConnectionError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
    UnknownTopicOrPartitionError,
)

from orchestrator.transport import broker_faults  # noqa: F401  # teaches the fault table

log = structlog.get_logger(__name__)

TOPIC_LOOKUP_S = 2.0

# Errors after which an idempotent producer can send nothing more: only a new one can.
PRODUCER_STATE_LOST = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    ProducerFenced,
)


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: str
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class Sent:
    producer: AIOKafkaProducer
    outcomes: list[asyncio.Future[object] | BaseException]


class Publisher:
    def __init__(
        self,
        bootstrap_servers: str,
        client_id: str,
        linger_ms: int = 0,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        """linger 0: a record goes out at once when the connection is idle, and records that
        arrive while a request is in flight wait for it and go out together, so batches
        grow with the load without a fixed delay at low load. `security`: see
        transport.security.kafka_security."""
        self._config: dict[str, Any] = {
            **(security or {}),
            "bootstrap_servers": bootstrap_servers.split(","),
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "request_timeout_ms": 30_000,
        }
        self._producer: AIOKafkaProducer | None = None
        self._lock: asyncio.Lock | None = None

    async def start(self) -> AIOKafkaProducer:
        """Start the producer on the running loop, once."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(**self._config)
                await producer.start()
                self._producer = producer
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    async def publish(self, records: Sequence[Record]) -> None:
        """Send records in order and return when the broker acknowledged every one of them.

        A broker that lost track of this producer's sequence numbers (after a restart, say)
        refuses everything it sends from then on. The producer is then replaced by a new one,
        with a new producer id, and the error raised: the caller sends the records again.
        """
        producer = self._producer or await self.start()
        pending = []
        try:
            for r in records:
                pending.append(
                    await producer.send(
                        r.topic, value=r.value, key=r.key.encode(), headers=list(r.headers)
                    )
                )
            await asyncio.gather(*pending)
        except PRODUCER_STATE_LOST as exc:
            await asyncio.gather(*pending, return_exceptions=True)
            await self._replace(producer, exc)
            raise

    async def publish_each(self, records: Sequence[Record]) -> list[BaseException | None]:
        """Send records in order; return each one's outcome: None once the broker
        acknowledged it, else the error. A record refused on its own (larger than the broker
        takes, for a topic it does not know) does not stop the records after it."""
        return await self.settle(await self.send_each(records))

    async def send_each(self, records: Sequence[Record]) -> Sent:
        """Hand records to the producer in order, without waiting for the broker: records
        sent by later calls go out after these. `settle` waits for the outcomes."""
        producer = self._producer or await self.start()
        outcomes: list[asyncio.Future[object] | BaseException] = []
        topics: dict[str, BaseException | None] = {}
        for r in records:
            if r.topic not in topics:
                topics[r.topic] = await self._known(producer, r.topic)
            unknown = topics[r.topic]
            if unknown is not None:
                outcomes.append(unknown)
                continue
            try:
                outcomes.append(
                    await producer.send(
                        r.topic, value=r.value, key=r.key.encode(), headers=list(r.headers)
                    )
                )
            except Exception as exc:  # refused before sending: too large, say
                outcomes.append(exc)
        return Sent(producer, outcomes)

    async def settle(self, sent: Sent) -> list[BaseException | None]:
        """Each record's outcome once the broker answered: None when it acknowledged it."""
        futures = [o for o in sent.outcomes if isinstance(o, asyncio.Future)]
        acks = iter(await asyncio.gather(*futures, return_exceptions=True))
        outcomes: list[BaseException | None] = []
        for o in sent.outcomes:
            ack = next(acks) if isinstance(o, asyncio.Future) else o
            outcomes.append(ack if isinstance(ack, BaseException) else None)
        lost = next((o for o in outcomes if isinstance(o, PRODUCER_STATE_LOST)), None)
        if lost is not None:
            await self._replace(sent.producer, lost)
        return outcomes

    async def _replace(self, producer: AIOKafkaProducer, error: BaseException) -> None:
        """Drop a producer the broker no longer takes; the next publish starts a new one."""
        log.warning("producer_replaced", client_id=self._config["client_id"], error=repr(error))
        if self._producer is producer:
            self._producer = None
        await producer.stop()  # a second stop, by a concurrent publish, does nothing

    async def _known(self, producer: AIOKafkaProducer, topic: str) -> BaseException | None:
        """None when the broker knows the topic; the producer would otherwise wait for it for
        its whole request timeout, and every record behind with it."""
        if producer.client.cluster.partitions_for_topic(topic) is not None:
            return None  # known from the metadata in hand: no wait, no task
        try:
            await asyncio.wait_for(producer.partitions_for(topic), TOPIC_LOOKUP_S)
        except TimeoutError:
            # aiokafka keeps no public record of whether the broker answered at all
            answered_ms = producer.client.cluster._last_successful_refresh_ms
            if time.time() * 1000 - answered_ms > (TOPIC_LOOKUP_S + 1) * 1000:
                away: BaseException = KafkaConnectionError(
                    "the broker answers no metadata request"
                )
                return away  # the broker is away, not the topic: transient
            unknown: BaseException = UnknownTopicOrPartitionError(
                f"no topic {topic} on the broker"
            )
            return unknown
        except Exception as exc:
            return exc
        return None
