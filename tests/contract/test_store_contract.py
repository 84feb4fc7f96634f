"""The store port's contract, one suite run against the in-memory fake and PostgreSQL.

The fake stands in for PostgreSQL in the use-case tests, so it must behave as the real store
does: each test here states one promise of `SagaStore` / `UnitOfWork` (orchestrator/ports.py)
and asserts it, through the port, on both. Only what the port cannot show (the timeline and
outbox rows of a refused saga) is read from each store's own tables.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.ports import Idempotency, Publication, SagaStore, UnitOfWork
from orchestrator.saga import messages
from orchestrator.saga import saga as core
from orchestrator.saga.errors import ConcurrencyConflictError
from orchestrator.saga.machine import SagaStatus, StepStatus
from orchestrator.saga.saga import Saga
from orchestrator.sagas import build_registry
from orchestrator.store.tables import outbox, saga_timeline
from orchestrator.store.unit_of_work import SqlUnitOfWork
from tests.fakes import FakeDatabase, SettableClock
from tests.unit.test_saga import ORDER_INPUT

ORDER = build_registry().get("order", 1)
KNOWN = [("order", 1)]
LONG_AGO = datetime(2026, 1, 1, tzinfo=UTC)
# the timeline kinds and outbox topics a saga has, as each store keeps them
Trail = tuple[list[str], list[str]]
NOTHING: Trail = ([], [])


@dataclasses.dataclass
class Backend:
    """A unit of work, and a way to read what the port cannot show."""

    name: str
    uow: UnitOfWork
    trail: Callable[[str], Awaitable[Trail]]

    def transaction(self) -> AbstractAsyncContextManager[SagaStore]:
        return self.uow.transaction()


def fake_backend() -> Backend:
    db = FakeDatabase(SettableClock())

    async def trail(saga_id: str) -> Trail:
        kinds = [e.kind for i, e in db.timeline if i == saga_id]
        return kinds, [p.topic for p in db.outbox if p.message.saga_id == saga_id]

    return Backend("fake", db, trail)


def postgres_backend(engine: AsyncEngine) -> Backend:
    async def trail(saga_id: str) -> Trail:
        async with engine.connect() as conn:
            kinds = await conn.scalars(
                sa.select(saga_timeline.c.kind)
                .where(saga_timeline.c.saga_id == saga_id)
                .order_by(saga_timeline.c.id)
            )
            topics = await conn.scalars(
                sa.select(outbox.c.topic).where(outbox.c.key == saga_id).order_by(outbox.c.id)
            )
            return list(kinds), list(topics)

    return Backend("postgres", SqlUnitOfWork(engine), trail)


@pytest.fixture(params=["fake", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "fake":
        yield fake_backend()
    else:
        yield postgres_backend(request.getfixturevalue("postgres_engine"))


# -- building sagas with the pure core ----------------------------------------------------


def started(now: datetime, saga_id: str | None = None, **input_changes: str) -> core.Decision:
    return core.start(
        ORDER, saga_id or messages.new_id(), {**ORDER_INPUT, **input_changes}, now, "t" * 32
    )


def waking_at(when: datetime, saga_type: str = "order") -> Saga:
    """A new saga whose wake time (its first step's deadline) is `when`."""
    probe = started(when)
    assert probe.saga.wake_at is not None
    saga = started(when - (probe.saga.wake_at - when)).saga
    saga.type = saga_type
    assert saga.wake_at == when
    return saga


def publications(decision: core.Decision) -> list[Publication]:
    return [Publication(f"ns.{o.channel}", o.message) for o in decision.outgoing]


def trail_of(decision: core.Decision) -> Trail:
    return [e.kind for e in decision.timeline], [p.topic for p in publications(decision)]


async def write_started(
    store: SagaStore,
    decisions: Sequence[core.Decision],
    keys: Sequence[Idempotency | None] | None = None,
) -> set[str]:
    """Insert the new sagas with their timeline and messages, as a start does."""
    now = await store.now()
    await store.insert_many(
        list(zip((d.saga for d in decisions), keys or [None] * len(decisions), strict=True)), now
    )
    await store.append_many([(d.saga.id, d.timeline, publications(d)) for d in decisions], now)
    return await store.flush()


async def load(backend: Backend, *saga_ids: str) -> dict[str, Saga]:
    async with backend.transaction() as store:
        return await store.load_many(saga_ids, for_update=False)


async def raised_by(write: Awaitable[None]) -> BaseException:
    try:
        await write
    except Exception as exc:
        return exc
    raise AssertionError("the transaction did not fail")


# -- 1. new sagas ---------------------------------------------------------------------------


async def test_new_sagas_are_stored_as_inserted(backend: Backend) -> None:
    async with backend.transaction() as store:
        now = await store.now()
        decisions = [started(now), started(now, orderId="o-2")]
        decisions[1].saga.context = {"note": "kept", "n": [1, 2]}
        assert await write_started(store, decisions) == set()
        assert all(d.saga.version == 1 for d in decisions)  # as insert_many sets it
        in_transaction = await store.load_many([d.saga.id for d in decisions], for_update=True)

    loaded = await load(backend, *(d.saga.id for d in decisions))

    expected = {d.saga.id: d.saga for d in decisions}
    assert in_transaction == expected
    assert loaded == expected  # every field: type, version, status, input, context, steps...
    first = loaded[decisions[0].saga.id]
    assert (first.type, first.definition_version, first.version) == ("order", 1, 1)
    assert first.status is SagaStatus.RUNNING
    assert first.input == ORDER_INPUT
    assert first.steps["reserve_inventory"].status is StepStatus.SENT
    assert first.steps["reserve_inventory"].deadline == now + timedelta(seconds=30)
    assert first.started_at == now
    assert [await backend.trail(d.saga.id) for d in decisions] == [trail_of(d) for d in decisions]


async def test_a_saga_is_stored_with_its_timeline_and_messages_in_order(
    backend: Backend,
) -> None:
    async with backend.transaction() as store:
        decision = started(await store.now())
        await write_started(store, [decision])
        now = await store.now()
        more = [core.TimelineEntry("note", None, {"n": 1}), core.TimelineEntry("note", "x")]
        await store.append_many([(decision.saga.id, more, publications(decision))], now)

    kinds, topics = trail_of(decision)
    assert await backend.trail(decision.saga.id) == ([*kinds, "note", "note"], topics * 2)


# -- 2. and 3. refused starts ---------------------------------------------------------------


async def test_a_new_saga_whose_idempotency_key_is_taken_is_refused(backend: Backend) -> None:
    async with backend.transaction() as store:
        first = started(await store.now())
        assert await write_started(store, [first], [Idempotency("k1", "hash-1")]) == set()

    async with backend.transaction() as store:
        now = await store.now()
        again, other, same_batch = started(now), started(now), started(now)
        keys = [Idempotency("k1", "hash-2"), Idempotency("k2", "hash-3"), Idempotency("k2", "h")]
        refused = await write_started(store, [again, other, same_batch], keys)
        assert refused == {again.saga.id, same_batch.saga.id}
        assert await store.find_by_idempotency_key("k2") == (other.saga, "hash-3")

    ids = [d.saga.id for d in (first, again, other, same_batch)]
    assert await load(backend, *ids) == {first.saga.id: first.saga, other.saga.id: other.saga}
    async with backend.transaction() as store:
        assert await store.find_by_idempotency_key("k1") == (first.saga, "hash-1")
        assert await store.find_by_idempotency_key("k2") == (other.saga, "hash-3")
        assert await store.find_by_idempotency_key("k3") is None
    assert await backend.trail(again.saga.id) == NOTHING
    assert await backend.trail(same_batch.saga.id) == NOTHING
    assert await backend.trail(other.saga.id) == trail_of(other)


async def test_a_new_saga_whose_id_is_taken_is_refused(backend: Backend) -> None:
    async with backend.transaction() as store:
        first = started(await store.now())
        assert await write_started(store, [first], [Idempotency("k1", "hash-1")]) == set()

    async with backend.transaction() as store:
        now = await store.now()
        again, other = started(now, first.saga.id, orderId="o-2"), started(now)
        refused = await write_started(
            store, [again, other], [Idempotency("k2", "hash-2"), Idempotency("k3", "hash-3")]
        )
        assert refused == {first.saga.id}

    loaded = await load(backend, first.saga.id, other.saga.id)
    assert loaded == {first.saga.id: first.saga, other.saga.id: other.saga}
    assert loaded[first.saga.id].input["orderId"] == "o-1"
    async with backend.transaction() as store:
        assert await store.find_by_idempotency_key("k2") is None  # the refused start's key
        assert await store.find_by_idempotency_key("k1") == (first.saga, "hash-1")
    assert await backend.trail(first.saga.id) == trail_of(first)  # nothing of the second


async def test_one_new_saga_id_twice_in_a_transaction_fails_it(backend: Backend) -> None:
    """The port cannot say which of the two was refused: the transaction fails, and the
    caller starts each apart (the service does)."""
    kept = started(LONG_AGO)

    async def twice() -> None:
        async with backend.transaction() as store:
            now = await store.now()
            one = started(now)
            await write_started(store, [kept, one, started(now, one.saga.id)])

    failure = await raised_by(twice())

    assert isinstance(failure, psycopg.errors.CardinalityViolation) or isinstance(
        failure.__cause__, psycopg.errors.CardinalityViolation
    )
    assert await load(backend, kept.saga.id) == {}
    assert await backend.trail(kept.saga.id) == NOTHING


# -- 4. updates -----------------------------------------------------------------------------


async def test_an_update_stores_the_saga_at_the_next_version(backend: Backend) -> None:
    async with backend.transaction() as store:
        decision = started(await store.now())
        await write_started(store, [decision])

    async with backend.transaction() as store:
        saga = (await store.load_many([decision.saga.id], for_update=True))[decision.saga.id]
        saga.context = {"reservationId": "r-1"}
        saga.steps["reserve_inventory"].status = StepStatus.SUCCEEDED
        saga.steps["reserve_inventory"].deadline = None
        saga.steps["reserve_inventory"].result = {"reservationId": "r-1"}
        saga.parked = "waits for an operator"
        await store.update_many([saga], await store.now())
        assert saga.version == 2
        assert await store.flush() == set()

    assert await load(backend, saga.id) == {saga.id: saga}


async def test_an_update_at_a_stale_version_conflicts_and_stores_nothing(
    backend: Backend,
) -> None:
    async with backend.transaction() as store:
        decision = started(await store.now())
        await write_started(store, [decision])
    message_id = messages.new_id()

    async def stale_write() -> None:
        async with backend.transaction() as store:
            stale = (await store.load_many([decision.saga.id], for_update=False))[decision.saga.id]
            async with backend.transaction() as other:  # another process, meanwhile
                fresh = (await other.load_many([stale.id], for_update=True))[stale.id]
                fresh.context = {"by": "other"}
                await other.update_many([fresh], await other.now())
            now = await store.now()
            new = started(now)
            await store.mark_processed_many([(message_id, stale.id)])
            await store.insert_many([(new.saga, Idempotency("k", "h"))], now)
            await store.append_many([(new.saga.id, new.timeline, publications(new))], now)
            stale.context = {"by": "stale"}
            await store.update_many([stale], now)
            await store.append_many([(stale.id, [core.TimelineEntry("late")], [])], now)
            await store.flush()

    with pytest.raises(ConcurrencyConflictError):
        await stale_write()

    stored = (await load(backend, decision.saga.id))[decision.saga.id]
    assert (stored.version, stored.context) == (2, {"by": "other"})
    assert await backend.trail(decision.saga.id) == trail_of(decision)
    async with backend.transaction() as store:
        assert await store.find_by_idempotency_key("k") is None
        assert await store.mark_processed_many([(message_id, stored.id)]) == {message_id}


# -- 5. processed messages ------------------------------------------------------------------


async def test_mark_processed_many_returns_the_ids_not_recorded_before(
    backend: Backend,
) -> None:
    saga_id = messages.new_id()
    m1, m2, m3 = (messages.new_id() for _ in range(3))
    async with backend.transaction() as store:
        fresh = await store.mark_processed_many([(m1, saga_id), (m2, saga_id), (m1, saga_id)])
        assert fresh == {m1, m2}
        assert await store.mark_processed_many([(m2, saga_id)]) == set()

    async with backend.transaction() as store:
        assert await store.mark_processed_many([(m2, saga_id), (m3, saga_id)]) == {m3}
        assert await store.mark_processed_many([(m1.upper(), saga_id)]) == set()
        assert await store.mark_processed_many([]) == set()


async def test_claim_replies_marks_the_new_ids_and_loads_the_sagas_named(
    backend: Backend,
) -> None:
    async with backend.transaction() as store:
        decision = started(await store.now())
        await write_started(store, [decision])
    m1, m2 = messages.new_id(), messages.new_id()
    unknown = messages.new_id()

    async with backend.transaction() as store:
        fresh, sagas = await store.claim_replies(
            [(m1, decision.saga.id), (m1, decision.saga.id), (m2, unknown)]
        )
        assert fresh == {m1, m2}
        assert list(sagas) == [decision.saga.id]
        assert sagas[decision.saga.id].steps == decision.saga.steps

    async with backend.transaction() as store:
        fresh, sagas = await store.claim_replies([(m1, decision.saga.id)])
        assert fresh == set()
        assert list(sagas) == [decision.saga.id]


# -- 6. timers ------------------------------------------------------------------------------


async def test_claim_due_returns_the_sagas_due_of_known_types(backend: Backend) -> None:
    async with backend.transaction() as store:
        now = await store.now()
        due = waking_at(now - timedelta(seconds=30))
        due_later = waking_at(now - timedelta(seconds=10))
        not_yet = waking_at(now + timedelta(seconds=30))
        unknown_overdue = waking_at(now - timedelta(days=30), "retired")
        unknown_due = waking_at(now - timedelta(seconds=30), "retired")
        other_version = waking_at(now - timedelta(days=30))
        other_version.definition_version = 2
        sagas = [due, due_later, not_yet, unknown_overdue, unknown_due, other_version]
        await store.insert_many([(s, None) for s in sagas], now)

    async with backend.transaction() as store:
        assert await store.claim_due(10, KNOWN) == [due.id, due_later.id]  # by wake time
    async with backend.transaction() as store:
        assert await store.claim_due(1, KNOWN) == [due.id]
    async with backend.transaction() as store:  # however late, only by their own workers
        assert await store.claim_due(10, [("retired", 1)]) == [unknown_overdue.id, unknown_due.id]
        assert await store.claim_due(10, [("order", 2)]) == [other_version.id]
    async with backend.transaction() as store:
        assert await store.claim_due(10, []) == []


async def test_claim_due_skips_sagas_locked_by_another_transaction(backend: Backend) -> None:
    async with backend.transaction() as store:
        now = await store.now()
        first, second, third = (waking_at(now - timedelta(seconds=s)) for s in (30, 20, 10))
        await store.insert_many([(s, None) for s in (first, second, third)], now)

    async with backend.transaction() as timer:
        assert await timer.claim_due(1, KNOWN) == [first.id]
        await timer.load_many([third.id], for_update=True)
        async with backend.transaction() as other_timer:
            assert await other_timer.claim_due(10, KNOWN) == [second.id]
    async with backend.transaction() as store:  # the locks went with the transactions
        assert await store.claim_due(10, KNOWN) == [first.id, second.id, third.id]


async def test_claim_due_skips_sagas_without_a_wake_time(backend: Backend) -> None:
    async with backend.transaction() as store:
        now = await store.now()
        parked = waking_at(now - timedelta(seconds=30))
        parked.parked = "waits for an operator"
        done = waking_at(now - timedelta(seconds=30))
        done.status = SagaStatus.COMPLETED
        await store.insert_many([(parked, None), (done, None)], now)
        assert (parked.wake_at, done.wake_at) == (None, None)

    async with backend.transaction() as store:
        assert await store.claim_due(10, KNOWN) == []
        assert await store.next_wake(KNOWN) is None


async def test_next_wake_is_the_earliest_wake_time_of_known_types(backend: Backend) -> None:
    async with backend.transaction() as store:
        assert await store.next_wake(KNOWN) is None
        now = await store.now()
        soon, later = waking_at(now + timedelta(seconds=5)), waking_at(now + timedelta(hours=1))
        past = waking_at(now - timedelta(hours=1), "retired")
        await store.insert_many([(later, None), (soon, None), (past, None)], now)

    async with backend.transaction() as store:
        assert await store.next_wake(KNOWN) == soon.wake_at
        assert await store.next_wake([("retired", 1)]) == past.wake_at
        assert await store.next_wake([("order", 2)]) is None
        assert await store.next_wake([]) is None


async def test_now_is_one_time_for_the_whole_transaction(backend: Backend) -> None:
    async with backend.transaction() as store:
        decision = started(await store.now())
        await write_started(store, [decision])
    async with backend.transaction() as store:
        now = await store.now()
        await store.load_many([decision.saga.id], for_update=True)
        await store.claim_due(10, KNOWN)
        assert await store.now() == now


# -- 7. ids ---------------------------------------------------------------------------------


async def test_load_many_finds_by_canonical_ids_and_not_unknown_ones(backend: Backend) -> None:
    async with backend.transaction() as store:
        assert await store.load_many([messages.new_id()], for_update=False) == {}
        assert await store.load_many([], for_update=True) == {}
        decision = started(await store.now())
        await write_started(store, [decision])
    saga_id = decision.saga.id

    loaded = await load(backend, saga_id.upper(), saga_id, messages.new_id())

    assert list(loaded) == [saga_id]
    assert loaded[saga_id].id == saga_id
    async with backend.transaction() as store:
        ids = await store.mark_processed_many([(saga_id.upper(), saga_id)])
        assert ids == {saga_id}  # canonical text, whatever the form given


# -- 8. isolation and rollback --------------------------------------------------------------


async def test_a_transaction_that_raises_stores_nothing(backend: Backend) -> None:
    async with backend.transaction() as store:
        kept = started(await store.now())
        await write_started(store, [kept])
    message_id = messages.new_id()
    new = started(LONG_AGO)

    async def fails() -> None:
        async with backend.transaction() as store:
            now = await store.now()
            await store.mark_processed_many([(message_id, kept.saga.id)])
            assert await write_started(store, [new], [Idempotency("k", "h")]) == set()
            saga = (await store.load_many([kept.saga.id], for_update=True))[kept.saga.id]
            saga.context = {"changed": True}
            await store.update_many([saga], now)
            await store.append_many([(saga.id, [core.TimelineEntry("lost")], [])], now)
            await store.flush()
            raise RuntimeError("the caller failed")

    with pytest.raises(RuntimeError, match="the caller failed"):
        await fails()

    assert await load(backend, kept.saga.id, new.saga.id) == {kept.saga.id: kept.saga}
    assert await backend.trail(kept.saga.id) == trail_of(kept)
    assert await backend.trail(new.saga.id) == NOTHING
    async with backend.transaction() as store:
        assert await store.find_by_idempotency_key("k") is None
        assert await store.mark_processed_many([(message_id, kept.saga.id)]) == {message_id}


async def test_a_transaction_sees_and_keeps_what_others_committed_meanwhile(
    backend: Backend,
) -> None:
    async with backend.transaction() as store:
        mine = started(await store.now())
        async with backend.transaction() as other:
            theirs = started(await other.now())
            await write_started(other, [theirs], [Idempotency("theirs", "h")])
        assert await store.load_many([theirs.saga.id], for_update=False) == {
            theirs.saga.id: theirs.saga
        }
        assert await store.find_by_idempotency_key("theirs") == (theirs.saga, "h")
        await write_started(store, [mine])

    both = await load(backend, mine.saga.id, theirs.saga.id)
    assert both == {mine.saga.id: mine.saga, theirs.saga.id: theirs.saga}
