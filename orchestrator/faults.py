"""What to do about an exception raised while applying one message or publishing one row.

One table for every consumer, the relay and the participant kit:

- TRANSIENT: the fault is in the world, not in the message (a lost connection, a database
  failing over, a deadlock, a lock held by a frozen process, a broker without a leader).
  Retry with backoff for as long as it lasts: the message is good and must not be lost.
- DOUBTFUL: it may be the world or the message (a statement timeout, a topic the broker does
  not know yet). Retry a few times; if it persists, treat it as poison.
- POISON: retrying cannot help (a constraint or data error, a message larger than the broker
  takes, a refused authorization, a bug in a handler). Dead-letter or park it with the
  reason, and go on with the others.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import psycopg
import structlog
from aiokafka import errors as kafka
from sqlalchemy import exc as sa_exc

from orchestrator.saga.errors import ConcurrencyConflictError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Fault(enum.Enum):
    TRANSIENT = "transient"
    DOUBTFUL = "doubtful"
    POISON = "poison"


# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57P", "58")  # connection, resources, shutdown, I/O
_TRANSIENT_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "25006": "read-only transaction (a failover in progress)",
    "25P03": "idle-in-transaction timeout",
    "55P03": "lock timeout",
    "55006": "object in use",
    "42P01": "undefined table (a migration not run yet)",
    "42703": "undefined column (a migration not run yet)",
}
_DOUBTFUL_SQLSTATES = {"57014": "statement timeout"}

_POISON_KAFKA = (
    kafka.MessageSizeTooLargeError,
    kafka.RecordTooLargeError,
    kafka.RecordListTooLargeError,
    kafka.InvalidTopicError,
    kafka.TopicAuthorizationFailedError,
    kafka.ClusterAuthorizationFailedError,
    kafka.PolicyViolationError,
    kafka.CorruptRecordException,
)
_DOUBTFUL_KAFKA = (kafka.UnknownTopicOrPartitionError,)
# A producer that lost its sequence numbers is replaced by a new one; a retry goes through.
_TRANSIENT_KAFKA = (
    kafka.KafkaConnectionError,
    kafka.KafkaTimeoutError,
    kafka.NoBrokersAvailable,
    kafka.OutOfOrderSequenceNumber,
    kafka.UnknownProducerId,
    kafka.InvalidProducerEpoch,
    kafka.InvalidProducerIdMapping,
    kafka.ProducerFenced,
    kafka.ProducerClosed,
)


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, ConcurrencyConflictError | TimeoutError | ConnectionError):
        return Fault.TRANSIENT
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return Fault.TRANSIENT
        return _classify_database(exc.orig)
    if isinstance(exc, psycopg.Error):
        return _classify_database(exc)
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):  # pool exhausted
        return Fault.TRANSIENT
    if isinstance(exc, kafka.KafkaError):
        return _classify_kafka(exc)
    if isinstance(exc, OSError):  # a socket, a DNS look-up
        return Fault.TRANSIENT
    return Fault.POISON


def _classify_kafka(exc: kafka.KafkaError) -> Fault:
    if isinstance(exc, _POISON_KAFKA):
        return Fault.POISON
    if isinstance(exc, _DOUBTFUL_KAFKA):
        return Fault.DOUBTFUL
    if isinstance(exc, _TRANSIENT_KAFKA) or exc.retriable:
        return Fault.TRANSIENT
    return Fault.DOUBTFUL


def _classify_database(orig: BaseException | None) -> Fault:
    sqlstate = getattr(orig, "sqlstate", None)
    if not sqlstate:
        # No answer from the server at all: the connection failed or broke.
        return (
            Fault.TRANSIENT
            if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
            else Fault.POISON
        )
    if sqlstate in _TRANSIENT_SQLSTATES or sqlstate.startswith(_TRANSIENT_SQLSTATE_CLASSES):
        return Fault.TRANSIENT
    if sqlstate in _DOUBTFUL_SQLSTATES:
        return Fault.DOUBTFUL
    return Fault.POISON  # data (22), integrity (23), and everything a retry cannot change


def describe(exc: BaseException, limit: int = 500) -> str:
    """A one-line reason fit for a header, a log and a database row: no NUL, bounded."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return printable(text, limit)


def printable(text: str, limit: int = 500) -> str:
    """Text any header, log or database takes: no NUL, no lone surrogate, bounded."""
    text = text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# A \u0000 escape that is not an escaped backslash followed by "u0000"
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def holds_nul(json_text: str) -> bool:
    """Whether JSON text holds a NUL character, which PostgreSQL stores nowhere."""
    return "u0000" in json_text and _NUL_ESCAPE.search(json_text) is not None


class GaveUpError(Exception):
    """A fault that is poison, or a doubtful one that persisted: `cause` says which."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(describe(cause))
        self.cause = cause


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    *,
    doubtful_tries: int = 4,
    max_backoff_s: float = 5.0,
) -> T:
    """Run `attempt` until it succeeds: transient faults are retried for as long as they
    last, doubtful ones `doubtful_tries` times; poison raises GaveUpError at once."""
    backoff = 0.05
    doubtful = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            fault = classify(exc)
            if fault is Fault.DOUBTFUL:
                doubtful += 1
            if fault is Fault.POISON or doubtful >= doubtful_tries:
                raise GaveUpError(exc) from exc
            log.warning(
                "transient_failure_retrying",
                fault=fault.value,
                error=describe(exc),
                retry_in_s=backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
