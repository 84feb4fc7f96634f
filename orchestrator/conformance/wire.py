"""The conformance run's only contact with the participant: Kafka. It publishes to the
participant's command topic and watches the replies topic and the command topic's dead
letters for the records of its own sagas."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.saga.errors import OrchestratorError, UndecodableMessageError
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.topics import DLQ_SUFFIX

log = structlog.get_logger(__name__)


class MissingTopicError(OrchestratorError):
    """A topic the participant uses does not exist: is it running, in this namespace?"""


class BrokerError(OrchestratorError):
    """The broker could not be reached, or refused a record."""


@dataclasses.dataclass(frozen=True)
class Received:
    """A record of the replies topic or a dead letter; `message` is None when it does not
    decode, and `problem` says why."""

    key: str
    value: bytes
    headers: Sequence[tuple[str, bytes]]
    message: messages.Message | None
    problem: str = ""

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k == name]
        return found[0].decode(errors="replace") if found else None


def _received(record: Any) -> Received:
    key = (record.key or b"").decode(errors="replace")
    value: bytes = record.value or b""
    headers = list(record.headers or ())
    try:
        return Received(key, value, headers, codec.decode(value))
    except UndecodableMessageError as exc:
        return Received(key, value, headers, None, exc.message)


class Wire:
    """Publishes commands and collects what comes back, until closed."""

    def __init__(
        self, servers: str, commands: str, replies: str, security: Mapping[str, Any]
    ) -> None:
        self.commands = commands
        self._topics = {replies: "replies", commands + DLQ_SUFFIX: "dead"}
        self._servers = servers
        self._security = dict(security)
        self._publisher = Publisher(servers, "saga-conformance", security=security)
        self._consumer: AIOKafkaConsumer | None = None
        self._reading: asyncio.Task[None] | None = None
        self._changed = asyncio.Condition()
        self.sagas: set[str] = set()  # only records of these are kept
        self.replies: list[Received] = []
        self.dead: list[Received] = []

    async def __aenter__(self) -> Wire:
        consumer = AIOKafkaConsumer(
            **self._security,
            bootstrap_servers=self._servers.split(","),
            enable_auto_commit=False,
        )
        self._consumer = consumer
        try:
            await consumer.start()
        except KafkaError as exc:
            await self.close()
            raise BrokerError(f"cannot reach the broker at {self._servers}: {exc!r}") from None
        wanted = [self.commands, *self._topics]
        missing = sorted(set(wanted) - set(await consumer.topics()))
        if missing:
            await self.close()
            raise MissingTopicError(
                f"no topic {', '.join(missing)} on the broker: is the participant running, "
                "in this topic namespace (--namespace)?"
            )
        await consumer._client.set_topics(list(self._topics))  # loads partitions; no public way
        tps = [
            TopicPartition(t, p)
            for t in self._topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        for tp, end in (await consumer.end_offsets(tps)).items():
            consumer.seek(tp, end)  # what came before this run is not ours
        self._reading = asyncio.ensure_future(self._read(consumer))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            if self._reading is not None:
                self._reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reading
        finally:
            if self._consumer is not None:
                await self._consumer.stop()
            await self._publisher.stop()

    async def send(self, key: str, value: bytes, headers: Sequence[tuple[str, bytes]]) -> None:
        self.sagas.add(key)
        try:
            await self._publisher.publish([Record(self.commands, key, value, list(headers))])
        except KafkaError as exc:
            raise BrokerError(f"could not publish to {self.commands}: {exc!r}") from None

    async def wait(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Whether `done()` came true within the time (it is asked as records arrive)."""
        async with self._changed:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._changed.wait_for(done)
            except TimeoutError:
                return done()
        return True

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
            except KafkaError as exc:  # the broker's trouble: the waits run out, if it lasts
                log.warning("conformance_read_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            kept = [
                (self._topics[tp.topic], _received(r))
                for tp, records in batches.items()
                for r in records
                if self._ours(r)
            ]
            if kept:
                async with self._changed:
                    for where, received in kept:
                        (self.replies if where == "replies" else self.dead).append(received)
                    self._changed.notify_all()

    def _ours(self, record: Any) -> bool:
        """Keyed by one of this run's sagas, or naming one (a reply with a wrong key)."""
        key = (record.key or b"").decode(errors="replace")
        value = record.value or b""
        return key in self.sagas or any(s.encode() in value for s in self.sagas)
