"""The outbox on PostgreSQL, for the processes that publish it: the relays alive, the
relay's claim of its shards (each under a lease), the marks of what the broker
acknowledged, and the parking of rows the broker refuses for good. The rows themselves are
written by the saga store, in the transaction that decides them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.ports import OUTBOX_SHARDS, ClaimedRows, OutboxMessage
from orchestrator.store.errors import translated
from orchestrator.store.saga_store import headers_of
from orchestrator.store.tables import (
    outbox,
    outbox_relay_lease,
    outbox_relay_member,
    saga,
    saga_timeline,
)

# A relay unseen this many leases long is gone for good: whoever notices forgets it.
_FORGET_AFTER_LEASES = 10


def _seconds(name: str) -> sa.ColumnElement[Any]:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam(name))


def _shard(key: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
    """The shard of a key. The bitwise and keeps the low bits of a negative hash too (abs()
    of the smallest int overflows)."""
    return sa.func.hashtext(key).op("&", return_type=sa.Integer)(OUTBOX_SHARDS - 1)


_NOTE_MEMBER = (
    pg.insert(outbox_relay_member)
    .values(owner=sa.bindparam("owner"), seen_at=sa.func.now())
    .on_conflict_do_update(index_elements=["owner"], set_={"seen_at": sa.func.now()})
)
# SKIP LOCKED: relays that notice the same departed one at once do not wait on each other.
_FORGET_DEPARTED = outbox_relay_member.delete().where(
    outbox_relay_member.c.owner.in_(
        sa.select(outbox_relay_member.c.owner)
        .where(outbox_relay_member.c.seen_at < sa.func.now() - _seconds("forget_after"))
        .with_for_update(skip_locked=True)
    )
)
_LIVE_MEMBERS = (
    sa.select(outbox_relay_member.c.owner)
    .where(outbox_relay_member.c.seen_at > sa.func.now() - _seconds("ttl"))
    .order_by(outbox_relay_member.c.owner)
)
_FORGET_MEMBER = outbox_relay_member.delete().where(
    outbox_relay_member.c.owner == sa.bindparam("owner")
)

# Each shard is published by one relay at a time, so that rows of one key can't be
# published out of order by two relays each holding a part of them, even while relays
# disagree for a moment on who is alive (and so on whose shard it is). It holds a lease,
# not a lock: no transaction stays open while it waits on the broker, and a relay that
# froze loses its shards when their leases expire. SKIP LOCKED: a lease another relay is
# taking right now is its own; waiting on it could deadlock two relays taking several.
_TAKE_LEASES = (
    outbox_relay_lease.update()
    .where(
        outbox_relay_lease.c.id.in_(
            sa.select(outbox_relay_lease.c.id)
            .where(
                outbox_relay_lease.c.id == sa.func.any(sa.bindparam("shards")),
                sa.or_(
                    outbox_relay_lease.c.owner == sa.bindparam("owner"),
                    outbox_relay_lease.c.expires_at < sa.func.now(),
                ),
            )
            .with_for_update(skip_locked=True)
        )
    )
    .values(owner=sa.bindparam("owner"), expires_at=sa.func.now() + _seconds("ttl"))
    .returning(outbox_relay_lease.c.id)
)
_RENEW_LEASES = (
    outbox_relay_lease.update()
    .where(
        outbox_relay_lease.c.id == sa.func.any(sa.bindparam("shards")),
        outbox_relay_lease.c.owner == sa.bindparam("owner"),
    )
    .values(expires_at=sa.func.now() + _seconds("ttl"))
    .returning(outbox_relay_lease.c.id)
)
# The owner is cleared too: a renewal while publishing later must not take back a lease
# given up for another relay.
_RELEASE_LEASES = (
    outbox_relay_lease.update()
    .where(outbox_relay_lease.c.owner == sa.bindparam("owner"))
    .values(owner=sa.literal_column("''"), expires_at=sa.func.now())
)
# Rows younger than `recover_after_s` are being published by the process that wrote them.
# Unpublished rows are few: the partial index finds them, the shard is checked on each.
_UNPUBLISHED = (
    sa.select(
        outbox.c.id,
        outbox.c.topic,
        outbox.c.key,
        outbox.c.headers,
        outbox.c.value,
        _shard(outbox.c.key).label("shard"),
    )
    .where(
        outbox.c.published_at.is_(None),
        outbox.c.parked_at.is_(None),
        outbox.c.created_at < sa.func.now() - _seconds("older_than"),
        _shard(outbox.c.key) == sa.func.any(sa.bindparam("shards")),
    )
    .order_by(outbox.c.id)
    .limit(sa.bindparam("limit"))
)
_COUNT_FAILURE = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("row_id"), outbox.c.published_at.is_(None))
    .values(attempts=outbox.c.attempts + 1, last_error=sa.bindparam("error"))
    .returning(outbox.c.attempts)
)
_PARK_ROW = (
    outbox.update()
    .where(outbox.c.id == sa.bindparam("row_id"), outbox.c.published_at.is_(None))
    .values(parked_at=sa.func.now())
)
_PARK_SAGA = (
    saga.update()
    .where(saga.c.id == sa.bindparam("saga_id"))
    .values(
        parked_reason=sa.bindparam("reason"),
        parked_at=sa.func.coalesce(saga.c.parked_at, sa.func.now()),
        wake_at=None,
        version=saga.c.version + 1,  # a worker holding the old version must reload
        updated_at=sa.func.now(),
    )
)
_NOTE_PARKED = saga_timeline.insert().values(
    saga_id=sa.bindparam("saga_id"),
    at=sa.func.now(),
    kind="message_parked",
    step=None,
    detail=sa.bindparam("detail"),
    message_id=None,
)


_MARK_PUBLISHED = (
    outbox.update()
    .where(outbox.c.id == sa.func.any(sa.bindparam("ids")), outbox.c.published_at.is_(None))
    .values(published_at=sa.func.now())
)
_NEWEST_ID = sa.select(sa.func.max(outbox.c.id))
# Bounded by id: publication time has no index, and the rows up to an id seen long enough
# ago are the old ones, nearly all of them published, so the scan reads little else.
_PURGE = outbox.delete().where(
    outbox.c.id.in_(
        sa.select(outbox.c.id)
        .where(
            outbox.c.id <= sa.bindparam("up_to"),
            outbox.c.published_at < sa.func.now() - _seconds("older_than"),
        )
        .order_by(outbox.c.id)
        .limit(sa.bindparam("limit"))
    )
)
# A mark lost with a crash costs one more publication of the row (by the relay), which every
# consumer ignores: the mark need not wait for the disk.
_NO_FLUSH_WAIT = sa.text("SET LOCAL synchronous_commit = off")


class SqlOutbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        with translated():
            async with self._engine.begin() as conn:
                yield conn

    async def join(self, owner: str, lease_s: float) -> list[str]:
        async with self._transaction() as conn:
            await conn.execute(_NOTE_MEMBER, {"owner": owner})
            forget_after = _FORGET_AFTER_LEASES * lease_s
            await conn.execute(_FORGET_DEPARTED, {"forget_after": forget_after})
            return list(await conn.scalars(_LIVE_MEMBERS, {"ttl": lease_s}))

    async def leave(self, owner: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(_FORGET_MEMBER, {"owner": owner})
            await conn.execute(_RELEASE_LEASES, {"owner": owner})

    async def claim(
        self, owner: str, shards: Sequence[int], lease_s: float, limit: int, older_than_s: float
    ) -> ClaimedRows:
        """The oldest unpublished rows of `shards`, older than `older_than_s`, of the shards
        whose leases were taken or renewed for `owner`; none of a shard another relay holds.
        A lease is taken only for a shard with rows: an idle relay writes nothing."""
        async with self._transaction() as conn:
            rows = (
                await conn.execute(
                    _UNPUBLISHED,
                    {"shards": list(shards), "limit": limit, "older_than": older_than_s},
                )
            ).all()
            if not rows:
                return ClaimedRows([], frozenset())
            with_work = sorted({r.shard for r in rows})
            held = frozenset(
                await conn.scalars(
                    _TAKE_LEASES, {"shards": with_work, "owner": owner, "ttl": lease_s}
                )
            )
        messages = [
            OutboxMessage(r.topic, r.key, r.value, headers_of(r.headers), r.id)
            for r in rows
            if r.shard in held
        ]
        return ClaimedRows(messages, held)

    async def renew(self, owner: str, shards: Sequence[int], lease_s: float) -> bool:
        async with self._transaction() as conn:
            renewed = await conn.scalars(
                _RENEW_LEASES, {"shards": list(shards), "owner": owner, "ttl": lease_s}
            )
            return set(renewed) >= set(shards)

    async def release(self, owner: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(_RELEASE_LEASES, {"owner": owner})

    async def mark_published(self, ids: Sequence[int]) -> None:
        async with self._transaction() as conn:
            await conn.execute(_NO_FLUSH_WAIT)
            await conn.execute(_MARK_PUBLISHED, {"ids": list(ids)})

    async def newest_id(self) -> int | None:
        async with self._transaction() as conn:
            newest = await conn.scalar(_NEWEST_ID)
            return int(newest) if newest is not None else None

    async def purge(self, up_to_id: int, older_than_s: float, limit: int) -> int:
        """Delete up to `limit` rows, up to `up_to_id`, published more than `older_than_s`
        ago; return how many. Unpublished and parked rows stay."""
        async with self._transaction() as conn:
            deleted = await conn.execute(
                _PURGE, {"up_to": up_to_id, "older_than": older_than_s, "limit": limit}
            )
            return deleted.rowcount

    async def count_failure(self, row_id: int, reason: str) -> int | None:
        """One more failed attempt of the row; None when it was published meanwhile."""
        async with self._transaction() as conn:
            attempts = await conn.scalar(_COUNT_FAILURE, {"row_id": row_id, "error": reason})
            return int(attempts) if attempts is not None else None

    async def park(self, message: OutboxMessage, reason: str, attempts: int) -> bool:
        """Set the row aside for an operator and mark its saga; False when it was published
        meanwhile."""
        async with self._transaction() as conn:
            parked = await conn.execute(_PARK_ROW, {"row_id": message.id})
            if not parked.rowcount:
                return False
            saga_id = _saga_id(message.key)
            if saga_id is None:
                return True
            why = f"a message to {message.topic} could not be published: {reason}"
            marked = await conn.execute(_PARK_SAGA, {"saga_id": saga_id, "reason": why})
            if marked.rowcount:  # the saga still exists
                detail = {
                    "outbox_id": message.id,
                    "topic": message.topic,
                    "reason": reason,
                    "attempts": attempts,
                }
                await conn.execute(_NOTE_PARKED, {"saga_id": saga_id, "detail": detail})
            return True


def _saga_id(key: str) -> str | None:
    """Every key the orchestrator writes is a saga id; a row written by hand may differ."""
    try:
        return str(uuid.UUID(key))
    except ValueError:
        return None
