"""The one table that tells a fault to retry from poison to set aside."""

from __future__ import annotations

import psycopg
import pytest
from aiokafka import errors as kafka
from psycopg import errors as pg
from sqlalchemy import exc as sa_exc

from orchestrator.faults import Fault, GaveUpError, classify, describe, retrying
from orchestrator.saga.errors import ConcurrencyConflictError, SagaNotFoundError
from orchestrator.store.errors import store_error
from orchestrator.transport import broker_faults  # noqa: F401  # Kafka's errors in the table


def through_sqlalchemy(orig: Exception) -> sa_exc.DBAPIError:
    """What the store raises: the driver's error wrapped the way SQLAlchemy wraps it."""
    wrapped: sa_exc.DBAPIError = sa_exc.DBAPIError.instance(
        "UPDATE saga ...", {}, orig, psycopg.Error
    )
    return wrapped


CASES = [
    # the database went away, failed over, or is busy: the message is fine
    (psycopg.OperationalError("connection refused"), Fault.TRANSIENT),
    (pg.AdminShutdown("terminating connection"), Fault.TRANSIENT),
    (pg.CannotConnectNow("the database system is starting up"), Fault.TRANSIENT),
    (pg.TooManyConnections("too many clients"), Fault.TRANSIENT),
    (pg.SerializationFailure("could not serialize"), Fault.TRANSIENT),
    (pg.DeadlockDetected("deadlock detected"), Fault.TRANSIENT),
    (pg.ReadOnlySqlTransaction("read-only transaction"), Fault.TRANSIENT),
    (pg.IdleInTransactionSessionTimeout("idle in transaction"), Fault.TRANSIENT),
    (pg.LockNotAvailable("lock timeout"), Fault.TRANSIENT),
    (pg.UndefinedTable("relation does not exist"), Fault.TRANSIENT),
    (ConcurrencyConflictError("changed since loaded"), Fault.TRANSIENT),
    (ConnectionResetError("reset by peer"), Fault.TRANSIENT),
    (TimeoutError(), Fault.TRANSIENT),
    (kafka.KafkaConnectionError("no connection"), Fault.TRANSIENT),
    (kafka.NotLeaderForPartitionError(), Fault.TRANSIENT),
    (kafka.KafkaTimeoutError(), Fault.TRANSIENT),
    (kafka.OutOfOrderSequenceNumber(), Fault.TRANSIENT),
    # it may be the load, it may be the message: a few tries
    (pg.QueryCanceled("canceling statement due to statement timeout"), Fault.DOUBTFUL),
    (kafka.UnknownTopicOrPartitionError(), Fault.DOUBTFUL),
    # no retry can help
    (pg.UniqueViolation("duplicate key"), Fault.POISON),
    (pg.UntranslatableCharacter("\\u0000 cannot be converted to text"), Fault.POISON),
    (pg.InvalidTextRepresentation("invalid input syntax for type uuid"), Fault.POISON),
    (pg.NumericValueOutOfRange("integer out of range"), Fault.POISON),
    (kafka.MessageSizeTooLargeError(), Fault.POISON),
    (kafka.TopicAuthorizationFailedError(), Fault.POISON),
    (SagaNotFoundError("no saga has id ..."), Fault.POISON),
    (RecursionError("maximum recursion depth exceeded"), Fault.POISON),
    (ValueError("a handler's bug"), Fault.POISON),
]


def as_raised(error: Exception) -> Exception:
    """What reaches the callers: a driver's error is translated by the unit of work."""
    return store_error(error) or error


@pytest.mark.parametrize(("error", "fault"), CASES, ids=lambda c: type(c).__name__)
def test_each_fault_is_classified(error: Exception, fault: Fault) -> None:
    assert classify(as_raised(error)) is fault
    if isinstance(error, psycopg.Error):
        assert classify(as_raised(through_sqlalchemy(error))) is fault


def test_a_connection_invalidated_while_in_use_is_transient_whatever_it_says() -> None:
    wrapped = through_sqlalchemy(pg.UniqueViolation("looks like poison"))
    wrapped.connection_invalidated = True
    assert classify(as_raised(wrapped)) is Fault.TRANSIENT


def test_a_value_the_database_refuses_is_poison_and_says_so() -> None:
    refused = store_error(pg.UntranslatableCharacter("\\u0000 cannot be converted to text"))
    assert refused is not None
    assert refused.fault is Fault.POISON
    assert refused.value_refused
    assert store_error(ValueError("not the driver's")) is None


def test_a_reason_never_carries_a_nul_and_stays_short() -> None:
    reason = describe(ValueError("bad \x00 step " + "x" * 1000))
    assert "\x00" not in reason
    assert len(reason) <= 500
    assert reason.startswith("ValueError: bad \\u0000 step")


class Flaky:
    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


async def test_transient_faults_are_retried_until_they_pass() -> None:
    attempt = Flaky(*[as_raised(pg.DeadlockDetected("deadlock"))] * 6)
    assert await retrying(attempt, max_backoff_s=0.001) == "done"
    assert attempt.calls == 7


async def test_a_doubtful_fault_that_persists_is_given_up() -> None:
    attempt = Flaky(*[kafka.UnknownTopicOrPartitionError()] * 10)
    with pytest.raises(GaveUpError) as raised:
        await retrying(attempt, doubtful_tries=3, max_backoff_s=0.001)
    assert attempt.calls == 3
    assert isinstance(raised.value.cause, kafka.UnknownTopicOrPartitionError)


async def test_poison_is_given_up_at_once() -> None:
    attempt = Flaky(as_raised(pg.UniqueViolation("duplicate key")))
    with pytest.raises(GaveUpError):
        await retrying(attempt, max_backoff_s=0.001)
    assert attempt.calls == 1


def test_a_reason_with_a_lone_surrogate_can_be_encoded_anywhere() -> None:
    reason = describe(ValueError("type 'inventory.reserve\ud800.reply' is unknown"))
    assert reason.encode()  # a Kafka header, a log line, a text column
    assert "\\ud800" in reason
