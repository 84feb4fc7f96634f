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

import structlog

from orchestrator.saga.errors import ConcurrencyConflictError

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Fault(enum.Enum):
    TRANSIENT = "transient"
    DOUBTFUL = "doubtful"
    POISON = "poison"


# Each adapter teaches this table the errors of its library (transport/broker_faults.py for
# Kafka's): the use cases and the store classify a broker's fault without importing it.
_CLASSIFIERS: list[Callable[[BaseException], Fault | None]] = []


def learn(classifier: Callable[[BaseException], Fault | None]) -> None:
    """Add a library's classifier: it returns the fault of an error it knows, else None."""
    if classifier not in _CLASSIFIERS:
        _CLASSIFIERS.append(classifier)


class StoreError(Exception):
    """The store failed. The unit of work raises it in place of the database driver's
    errors (see store/errors.py), so that no caller needs to know the driver: `fault` says
    whether a retry can help, `value_refused` that a value could not be stored."""

    def __init__(self, fault: Fault, reason: str, value_refused: bool = False) -> None:
        super().__init__(reason)
        self.fault = fault
        self.value_refused = value_refused


def classify(exc: BaseException) -> Fault:
    if isinstance(exc, StoreError):
        return exc.fault
    if isinstance(exc, ConcurrencyConflictError | TimeoutError | ConnectionError):
        return Fault.TRANSIENT
    for classifier in _CLASSIFIERS:
        fault = classifier(exc)
        if fault is not None:
            return fault
    if isinstance(exc, OSError):  # a socket, a DNS look-up
        return Fault.TRANSIENT
    return Fault.POISON


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
