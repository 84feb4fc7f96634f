"""Applies one consumed message with retries for transient faults and dead letters for poison."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import exc as sa_exc

from orchestrator import metrics
from orchestrator.saga import messages
from orchestrator.saga.errors import (
    ConcurrencyConflictError,
    OrchestratorError,
    UndecodableMessageError,
)
from orchestrator.transport import codec
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.topics import DLQ_SUFFIX

log = structlog.get_logger(__name__)

TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, ConcurrencyConflictError, OSError)


class Consumed:
    """The parts of a consumed Kafka record that dead letters and logs need."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.headers = headers


async def apply(
    record: Consumed,
    handle: Callable[[messages.Message], Awaitable[object]],
    publisher: Publisher,
    max_backoff_s: float = 5.0,
) -> None:
    """Handle the record until it is applied or dead-lettered; never raise for its content."""
    try:
        message = codec.decode(record.value)
    except UndecodableMessageError as exc:
        await dead_letter(record, publisher, exc.message)
        return
    structlog.contextvars.bind_contextvars(
        saga_id=message.saga_id,
        step=message.step,
        message_id=message.message_id,
        trace_id=message.trace_id or None,
    )
    backoff = 0.05
    try:
        while True:
            try:
                await handle(message)
                return
            except TRANSIENT as exc:
                log.warning("transient_failure_retrying", error=str(exc), retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max_backoff_s)
            except OrchestratorError as exc:
                await dead_letter(record, publisher, exc.message)
                return
            except Exception as exc:
                log.exception("message_handler_failed")
                await dead_letter(record, publisher, f"handler failed: {exc!r}")
                return
    finally:
        structlog.contextvars.unbind_contextvars("saga_id", "step", "message_id", "trace_id")


async def dead_letter(record: Consumed, publisher: Publisher, reason: str) -> None:
    headers = [
        *record.headers,
        ("failure_reason", reason.encode()),
        ("original_topic", record.topic.encode()),
        ("original_partition", str(record.partition).encode()),
        ("original_offset", str(record.offset).encode()),
    ]
    key = record.key.decode(errors="replace") if record.key else ""
    await publisher.publish([Record(record.topic + DLQ_SUFFIX, key, record.value or b"", headers)])
    metrics.DEAD_LETTERS.labels(record.topic).inc()
    log.warning(
        "message_dead_lettered",
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
