"""Reads a dead-letter topic and re-publishes a message to where it came from."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from orchestrator import signing
from orchestrator.saga.errors import OrchestratorError
from orchestrator.signing import Sign
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.topics import DLQ_SUFFIX

ORIGIN_HEADERS = ("failure_reason", "original_topic", "original_partition", "original_offset")
# who replayed a message and why travel with it, so that its consumer's log can tell
REPLAY_HEADERS = ("replayedBy", "replayReason")

log = structlog.get_logger(__name__)


class DeadLetterNotFoundError(OrchestratorError):
    """No dead letter is at this partition and offset."""


class ReplayRefusedError(OrchestratorError):
    """A replay needs a reason and an operator, for the record."""


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    partition: int
    offset: int
    key: str
    value: bytes
    headers: dict[str, str]

    @property
    def reason(self) -> str:
        return self.headers.get("failure_reason", "")

    @property
    def original_topic(self) -> str:
        return self.headers.get("original_topic", "")


async def read(
    bootstrap_servers: str,
    topic: str,
    limit: int = 1000,
    security: Mapping[str, Any] | None = None,
) -> list[DeadLetter]:
    """Every dead letter of `topic` (the .dlq suffix may be left out), oldest first."""
    topic = topic if topic.endswith(DLQ_SUFFIX) else topic + DLQ_SUFFIX
    consumer = AIOKafkaConsumer(
        **(security or {}),
        bootstrap_servers=bootstrap_servers.split(","),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        if topic not in await consumer.topics():
            raise DeadLetterNotFoundError(f"there is no topic {topic}")
        await consumer._client.set_topics([topic])  # loads its partitions; no public way
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            raise DeadLetterNotFoundError(f"there is no topic {topic}")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp, start in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, start)
        letters: list[DeadLetter] = []
        while len(letters) < limit and any(await _behind(consumer, tps, ends)):
            batch = await consumer.getmany(*tps, timeout_ms=1000, max_records=500)
            for records in batch.values():
                letters += [_letter(r) for r in records]
        return sorted(letters, key=lambda d: (d.partition, d.offset))[:limit]
    finally:
        await consumer.stop()


async def _behind(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], ends: dict[TopicPartition, int]
) -> list[bool]:
    return [await consumer.position(tp) < ends[tp] for tp in tps]


def _letter(record: object) -> DeadLetter:
    r: object = record
    headers = {k: v.decode(errors="replace") for k, v in getattr(r, "headers", ())}
    key = getattr(r, "key", None) or b""
    return DeadLetter(
        getattr(r, "partition"),  # noqa: B009  # aiokafka's record type is untyped
        getattr(r, "offset"),  # noqa: B009
        key.decode(errors="replace"),
        getattr(r, "value", None) or b"",
        headers,
    )


async def replay(
    bootstrap_servers: str,
    letter: DeadLetter,
    value: bytes | None = None,
    security: Mapping[str, Any] | None = None,
    *,
    replayed_by: str,
    reason: str,
    sign: Sign | None = None,
) -> str:
    """Publish the letter (or a fixed `value`) to its original topic; return that topic.
    Who and why are logged and carried in the message's headers. The letter keeps its
    signature; a fixed value has none until `sign` gives it one."""
    if not letter.original_topic:
        raise DeadLetterNotFoundError("the dead letter does not say where it came from")
    if not (reason.strip() and replayed_by.strip()):
        raise ReplayRefusedError()
    dropped = {*ORIGIN_HEADERS, *REPLAY_HEADERS, *([signing.HEADER] if value else [])}
    headers = [(k, v.encode()) for k, v in letter.headers.items() if k not in dropped]
    headers += [("replayedBy", replayed_by.encode()), ("replayReason", reason.encode())]
    if value and sign is not None:
        headers.append(sign(value))
    publisher = Publisher(bootstrap_servers, "saga-dlq-replay", security=security)
    try:
        await publisher.publish(
            [Record(letter.original_topic, letter.key, value or letter.value, headers)]
        )
    finally:
        await publisher.stop()
    log.warning(
        "dlq_replayed",
        replayed_by=replayed_by,
        reason=reason,
        to_topic=letter.original_topic,
        dead_letter=f"{letter.partition}:{letter.offset}",
        failure_reason=letter.reason,
        fixed=value is not None,
        message_key=letter.key,
    )
    return letter.original_topic
