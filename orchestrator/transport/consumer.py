"""Applies one consumed message with retries for transient faults and dead letters for poison."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog
from aiokafka.errors import KafkaError
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

TRANSIENT = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    ConcurrencyConflictError,
    KafkaError,
    OSError,
    TimeoutError,
)
T = TypeVar("T")


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


DeadLetterHook = Callable[[messages.Message, str, "Consumed"], Awaitable[None]]


async def apply(
    record: Consumed,
    handle: Callable[[messages.Message], Awaitable[object]],
    publisher: Publisher,
    on_dead_letter: DeadLetterHook | None = None,
    max_backoff_s: float = 5.0,
) -> None:
    """Handle the record until it is applied or dead-lettered; never raise for its content.

    A transient fault (database or broker unreachable, a concurrent writer) is retried with
    backoff, for as long as it lasts: the record is not lost and the partition waits.
    """
    try:
        message = codec.decode(record.value)
    except UndecodableMessageError as exc:
        undecodable = exc.message
        await _until_done(lambda: dead_letter(record, publisher, undecodable), max_backoff_s)
        return
    structlog.contextvars.bind_contextvars(
        saga_id=message.saga_id,
        step=message.step,
        message_id=message.message_id,
        trace_id=message.trace_id or None,
    )
    try:
        reason = await _until_done(lambda: _poison_reason(handle, message), max_backoff_s)
        if reason is None:
            return
        await _until_done(lambda: dead_letter(record, publisher, reason), max_backoff_s)
        if on_dead_letter is not None:
            hook = on_dead_letter
            await _until_done(lambda: hook(message, reason, record), max_backoff_s)
    finally:
        structlog.contextvars.unbind_contextvars("saga_id", "step", "message_id", "trace_id")


async def apply_batch(
    records: Sequence[Consumed],
    handle_many: Callable[[list[messages.Message]], Awaitable[object]],
    apply_one: Callable[[Consumed], Awaitable[None]],
    max_backoff_s: float = 5.0,
) -> None:
    """Handle records together (one transaction, one commit) while they are all well formed
    and applicable; otherwise each on its own, so that only the poison is dead-lettered.
    Transient faults are retried for the whole batch, as `apply` does for one record."""
    try:
        batch = [codec.decode(r.value) for r in records]
    except UndecodableMessageError:
        batch = []
    if len(batch) > 1:
        try:
            await _until_done(lambda: handle_many(batch), max_backoff_s)
            return
        except Exception as exc:  # TRANSIENT never gets here: retried above
            log.info("batch_applied_one_by_one", size=len(batch), error=repr(exc))
    for record in records:
        await apply_one(record)


async def _poison_reason(
    handle: Callable[[messages.Message], Awaitable[object]], message: messages.Message
) -> str | None:
    """None when the message was applied; why not, when it never can be."""
    try:
        await handle(message)
    except TRANSIENT:
        raise
    except OrchestratorError as exc:
        return exc.message
    except sa_exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        log.exception("message_handler_failed")
        return f"the database refused it: {exc.orig!r}"
    except Exception as exc:
        log.exception("message_handler_failed")
        return f"handler failed: {exc!r}"
    return None


async def _until_done(attempt: Callable[[], Awaitable[T]], max_backoff_s: float) -> T:
    backoff = 0.05
    while True:
        try:
            return await attempt()
        except TRANSIENT as exc:
            log.warning("transient_failure_retrying", error=repr(exc), retry_in_s=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)


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
