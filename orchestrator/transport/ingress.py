"""The ingress topic (`<namespace>.starts`): sagas started by events, exactly once.

A message is keyed; its value is a JSON object:

    {"type": "order", "input": {...}, "version": 2, "sagaId": "<uuid>", "idempotencyKey": "..."}

`version`, `sagaId` and `idempotencyKey` are optional. The idempotency key is
`idempotencyKey`, else the record's key: a message delivered twice, or sent twice by its
producer, starts one saga. With a `sagaId` the saga gets that id. A message that cannot
start a saga (malformed, an unknown type, an invalid input, a key used for another request)
goes to `<namespace>.starts.dlq` with the reason; the others in its batch start all the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from orchestrator import codec, tracing
from orchestrator.faults import Fault, GaveUpError, classify, describe, retrying
from orchestrator.ports import Started, StartRequest
from orchestrator.saga.errors import (
    InvalidSagaInputError,
    OrchestratorError,
    UndecodableMessageError,
)
from orchestrator.transport.consumer import Consumed, dead_letter
from orchestrator.transport.producer import Publisher

MAX_KEY_CHARS = 200
_FIELDS = {"type", "input", "version", "sagaId", "idempotencyKey"}

StartMany = Callable[[list[StartRequest]], Awaitable[Sequence[Started]]]


def decode_start(record: Consumed) -> StartRequest:
    """The start a record asks for; UndecodableMessageError says why it asks for none."""
    key = _key(record.key)
    data = _json_object(record.value)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise UndecodableMessageError(f"the start has unknown fields: {', '.join(unknown)}"[:500])
    saga_type, saga_input = data.get("type"), data.get("input")
    if not isinstance(saga_type, str) or not 1 <= len(saga_type) <= 128:
        raise UndecodableMessageError("type must be a saga type name (1 to 128 characters)")
    if not isinstance(saga_input, dict):
        raise UndecodableMessageError("input must be a JSON object")
    version = data.get("version")
    if version is not None and (
        not isinstance(version, int) or isinstance(version, bool) or not 1 <= version < 2**31
    ):
        raise UndecodableMessageError("version must be a positive integer")
    idempotency_key = data.get("idempotencyKey", key)
    if not isinstance(idempotency_key, str) or not 1 <= len(idempotency_key) <= MAX_KEY_CHARS:
        raise UndecodableMessageError(
            f"idempotencyKey must be a string of 1 to {MAX_KEY_CHARS} characters"
        )
    if "\x00" in idempotency_key:
        raise UndecodableMessageError("idempotencyKey holds a NUL character")
    headers = dict(record.headers)
    trace = headers.get("traceparent", b"").decode("utf-8", "replace")
    return StartRequest(
        saga_type,
        saga_input,
        version,
        idempotency_key,
        codec.trace_id_of(trace),
        _saga_id(data.get("sagaId")),
    )


def _json_object(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise UndecodableMessageError("the start has no value")
    data = codec.loads(raw)
    if not isinstance(data, dict):
        raise UndecodableMessageError("the start is not a JSON object")
    return data


def _key(raw: bytes | None) -> str:
    if not raw:
        raise UndecodableMessageError("a start must be keyed (by its idempotency key or saga id)")
    try:
        key = raw.decode()
    except UnicodeDecodeError:
        raise UndecodableMessageError("the key is not UTF-8") from None
    if len(key) > MAX_KEY_CHARS or "\x00" in key:
        raise UndecodableMessageError(
            f"the key must be at most {MAX_KEY_CHARS} characters, none of them NUL"
        )
    return key


def _saga_id(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise UndecodableMessageError("sagaId must be a UUID") from None


async def apply_starts(
    records: Sequence[Consumed],
    start_many: StartMany,
    publisher: Publisher,
    max_backoff_s: float = 5.0,
) -> None:
    """Start the sagas a batch of records asks for, in one transaction; dead-letter each
    record that starts none, with the reason. Transient faults are retried for the batch
    (a repeat starts nothing twice: the keys deduplicate)."""
    wanted = await _decoded(records, publisher, max_backoff_s)
    if not wanted:
        return
    requests = [request for _, request in wanted]
    started = time.time_ns() if tracing.enabled else 0

    async def start() -> Sequence[Started]:
        results = await start_many(requests)
        for result in results:
            if isinstance(result, Exception) and classify(result) is not Fault.POISON:
                raise result  # the store is away: the whole batch again, later
        return results

    try:
        results: Sequence[Started] = await retrying(start, max_backoff_s=max_backoff_s)
    except GaveUpError as exc:
        results = [exc.cause if isinstance(exc.cause, Exception) else exc] * len(requests)
    for (record, _), result in zip(wanted, results, strict=True):
        if isinstance(result, Exception):
            await dead_letter(record, publisher, _reason(result), max_backoff_s)
    if tracing.enabled:
        _trace_starts(wanted, results, started)


async def _decoded(
    records: Sequence[Consumed], publisher: Publisher, max_backoff_s: float
) -> list[tuple[Consumed, StartRequest]]:
    """Each record with the start it asks for; one that asks for none is dead-lettered."""
    wanted: list[tuple[Consumed, StartRequest]] = []
    for record in records:
        try:
            wanted.append((record, decode_start(record)))
        except UndecodableMessageError as exc:
            await dead_letter(record, publisher, exc.message, max_backoff_s)
    return wanted


def _trace_starts(
    wanted: Sequence[tuple[Consumed, StartRequest]], results: Sequence[Started], started: int
) -> None:
    ended = time.time_ns()
    for (record, _), result in zip(wanted, results, strict=True):
        if not isinstance(result, Exception) and result[1]:  # a new saga
            trace = dict(record.headers).get("traceparent", b"").decode("utf-8", "replace")
            tracing.started_by_message(result[0], trace, started, ended)


def _reason(exc: Exception) -> str:
    if isinstance(exc, InvalidSagaInputError):
        problems = "; ".join(f"{p.get('field')}: {p.get('problem')}" for p in exc.problems)
        return f"{exc.message}: {problems}"
    if isinstance(exc, OrchestratorError):
        return exc.message
    return f"the saga could not be started: {describe(exc)}"
