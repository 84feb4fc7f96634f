"""Applies consumed messages: transient faults are retried, anything else dead-lettered.

Whatever a record holds, applying it ends: the agent never crashes on content, and its
offset moves on once the record was applied or dead-lettered (see faults.py for the table
that tells the two apart).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import structlog

from orchestrator import codec, metrics
from orchestrator.faults import GaveUpError, describe, printable, retrying
from orchestrator.ports import Refused
from orchestrator.saga import messages
from orchestrator.saga.errors import OrchestratorError, UndecodableMessageError
from orchestrator.signing import UnauthenticatedMessageError
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.topics import DLQ_SUFFIX

log = structlog.get_logger(__name__)


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
# Raises UnauthenticatedMessageError for a message its consumer must not take (signing.py).
Verify = Callable[[bytes, Sequence[tuple[str, bytes]], messages.Message], None]


async def apply(
    record: Consumed,
    handle: Callable[[messages.Message], Awaitable[object]],
    publisher: Publisher,
    on_dead_letter: DeadLetterHook | None = None,
    max_backoff_s: float = 5.0,
    verify: Verify | None = None,
) -> None:
    """Handle the record until it is applied or dead-lettered; never raise for its content.

    A transient fault (database or broker unreachable, a concurrent writer) is retried with
    backoff, for as long as it lasts: the record is not lost and the partition waits. A
    message `verify` refuses is dead-lettered and touches nothing else, not even the
    timeline of the saga it names (`on_dead_letter` is not called).
    """
    try:
        message = codec.decode(record.value)
        if verify is not None:
            verify(record.value or b"", record.headers, message)
    except UnauthenticatedMessageError as exc:
        metrics.UNAUTHENTICATED.labels(record.topic).inc()
        await dead_letter(record, publisher, f"unauthenticated: {exc.message}", max_backoff_s)
        return
    except UndecodableMessageError as exc:
        await dead_letter(record, publisher, exc.message, max_backoff_s)
        return
    structlog.contextvars.bind_contextvars(
        saga_id=message.saga_id,
        step=message.step,
        message_id=message.message_id,
        trace_id=message.trace_id or None,
    )
    try:
        try:
            result = await retrying(lambda: handle(message), max_backoff_s=max_backoff_s)
            (refused,) = _refusals(result, 1)
            if refused is not None:  # its saga's timeline has the note already
                await dead_letter(record, publisher, refused.reason, max_backoff_s)
            return
        except GaveUpError as exc:
            reason = _reason(exc.cause)
        await dead_letter(record, publisher, reason, max_backoff_s)
        if on_dead_letter is not None:
            hook = on_dead_letter
            try:
                await retrying(lambda: hook(message, reason, record), max_backoff_s=max_backoff_s)
            except GaveUpError as exc:  # the letter is out; its note on the saga is not
                log.error("dead_letter_hook_failed", error=describe(exc.cause))
    finally:
        structlog.contextvars.unbind_contextvars("saga_id", "step", "message_id", "trace_id")


async def apply_batch(
    records: Sequence[Consumed],
    handle_many: Callable[[list[messages.Message]], Awaitable[object]],
    apply_one: Callable[[Consumed], Awaitable[None]],
    max_backoff_s: float = 5.0,
    verify: Verify | None = None,
    refuse: Callable[[Consumed, str], Awaitable[None]] | None = None,
) -> None:
    """Handle records together (one transaction, one commit) while they are all well formed,
    authentic and applicable; otherwise each on its own, so that only the poison is
    dead-lettered. Transient faults are retried for the whole batch, as `apply` does for
    one record. The records `handle_many` refused without failing the batch go to `refuse`
    once it committed."""
    batch = _all_decoded(records, verify)
    if len(batch) > 1:
        try:
            result = await retrying(lambda: handle_many(batch), max_backoff_s=max_backoff_s)
        except GaveUpError as exc:
            log.info("batch_applied_one_by_one", size=len(batch), error=describe(exc.cause))
        else:
            for record, refused in zip(records, _refusals(result, len(records)), strict=True):
                if refused is not None and refuse is not None:
                    await refuse(record, refused.reason)
            return
    for record in records:
        try:
            await apply_one(record)
        except Exception as exc:  # a bug on the dead-letter path: log it, go on with the rest
            metrics.DEAD_LETTER_FAILURES.labels(record.topic).inc()
            log.error(
                "record_failed",
                error=describe(exc),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                exc_info=exc,
            )


def applying(
    handle_many: Callable[[list[messages.Message]], Awaitable[object]],
    publisher: Publisher,
    on_dead_letter: DeadLetterHook | None = None,
    verify: Verify | None = None,
) -> Callable[[list[Consumed]], Awaitable[None]]:
    """What a consumer loop runs on each batch: `apply_batch`, falling back to `apply` one
    record at a time (the worker's replies and a participant's commands alike)."""

    async def apply_one(record: Consumed) -> None:
        await apply(record, lambda m: handle_many([m]), publisher, on_dead_letter, verify=verify)

    async def refuse(record: Consumed, reason: str) -> None:
        await dead_letter(record, publisher, reason)

    async def apply_records(records: list[Consumed]) -> None:
        await apply_batch(records, handle_many, apply_one, verify=verify, refuse=refuse)

    return apply_records


def _all_decoded(records: Sequence[Consumed], verify: Verify | None) -> list[messages.Message]:
    """The records' messages, or none if one is not well formed or not authentic."""
    try:
        batch = [codec.decode(r.value) for r in records]
        if verify is not None:
            for r, message in zip(records, batch, strict=True):
                verify(r.value or b"", r.headers, message)
    except (UndecodableMessageError, UnauthenticatedMessageError):
        return []
    return batch


def _refusals(result: object, count: int) -> list[Refused | None]:
    """What a handler refused of the `count` messages it was given, each in its place."""
    if isinstance(result, list) and len(result) == count:
        return [r if isinstance(r, Refused) else None for r in result]
    return [None] * count


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OrchestratorError):
        return printable(exc.message)
    log.error("message_handler_failed", error=describe(exc), exc_info=exc)
    return f"handler failed: {describe(exc)}"


async def dead_letter(
    record: Consumed, publisher: Publisher, reason: str, max_backoff_s: float = 5.0
) -> None:
    """Copy the record to its topic's dead-letter topic with why and where it came from.

    A copy the broker refuses (its value with our headers over the size limit, say) goes
    without its value, and says so; the original stays on its topic until retention.
    """
    reason = printable(reason)
    origin = [
        ("failure_reason", reason.encode()),
        ("original_topic", record.topic.encode()),
        ("original_partition", str(record.partition).encode()),
        ("original_offset", str(record.offset).encode()),
    ]
    key = record.key.decode(errors="replace") if record.key else ""
    letter = Record(
        record.topic + DLQ_SUFFIX, key, record.value or b"", [*record.headers, *origin]
    )
    try:
        await retrying(lambda: publisher.publish([letter]), max_backoff_s=max_backoff_s)
    except GaveUpError as exc:
        refused = describe(exc.cause)
        log.error("dead_letter_refused_sending_without_value", error=refused)
        bare = Record(letter.topic, key, b"", [*origin, ("value_omitted", refused.encode())])
        try:
            await retrying(lambda: publisher.publish([bare]), max_backoff_s=max_backoff_s)
        except GaveUpError as again:
            metrics.DEAD_LETTER_FAILURES.labels(record.topic).inc()
            log.error(
                "dead_letter_failed",
                error=describe(again.cause),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            return
    metrics.DEAD_LETTERS.labels(record.topic).inc()
    log.warning(
        "message_dead_lettered",
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
