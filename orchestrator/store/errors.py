"""The database driver's errors, translated once into the orchestrator's StoreError.

The unit of work (and the participant kit, which runs its own transactions) raise
`StoreError` in place of psycopg's and SQLAlchemy's errors: nothing above the store needs to
know the driver. `fault` comes from the SQLSTATE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy import exc as sa_exc

from orchestrator.faults import Fault, StoreError, describe

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
DRIVER_ERRORS = (psycopg.Error, sa_exc.DBAPIError, sa_exc.DisconnectionError, sa_exc.TimeoutError)


@contextmanager
def translated() -> Iterator[None]:
    """Raise a StoreError in place of any driver error raised inside the block."""
    try:
        yield
    except DRIVER_ERRORS as exc:
        error = store_error(exc)
        assert error is not None
        raise error from exc


def store_error(exc: BaseException) -> StoreError | None:
    """The StoreError for a driver's error; None for any other exception."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sa_exc.DBAPIError):
        orig = exc.orig
        fault = Fault.TRANSIENT if exc.connection_invalidated else fault_of(orig)
    elif isinstance(exc, psycopg.Error):
        orig, fault = exc, fault_of(exc)
    elif isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):  # pool exhausted
        orig, fault = exc, Fault.TRANSIENT
    else:
        return None
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return StoreError(fault, describe(orig or exc), value_refused=sqlstate.startswith("22"))


def fault_of(orig: BaseException | None) -> Fault:
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
