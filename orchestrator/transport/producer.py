"""The Kafka producer every process publishes with: idempotent, acks=all, ordered per key."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    UnknownProducerId,
)

log = structlog.get_logger(__name__)

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


class Publisher:
    def __init__(self, bootstrap_servers: str, client_id: str, linger_ms: int = 0) -> None:
        """linger 0: a record goes out at once when the connection is idle, and records that
        arrive while a request is in flight wait for it and go out together, so batches
        grow with the load without a fixed delay at low load."""
        self._config = {
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
            log.warning("producer_replaced", client_id=self._config["client_id"], error=repr(exc))
            await asyncio.gather(*pending, return_exceptions=True)
            if self._producer is producer:
                self._producer = None
            await producer.stop()  # a second stop, by a concurrent publish, does nothing
            raise
