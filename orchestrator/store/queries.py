"""Read models for operators: a saga in full, pages of sagas and of timelines, statistics."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import sealed
from orchestrator.saga.errors import InvalidQueryError
from orchestrator.saga.machine import ACTIVE, TERMINAL, SagaStatus, StepStatus
from orchestrator.store.tables import outbox, saga, saga_step, saga_timeline

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NOT_TERMINAL = tuple(sorted(s.value for s in SagaStatus if s not in TERMINAL))


class InvalidCursorError(InvalidQueryError):
    """The cursor is not one this api gave out."""


@dataclasses.dataclass(frozen=True)
class SagaFilter:
    statuses: tuple[str, ...] = ()
    saga_type: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    updated_before: datetime | None = None
    parked: bool | None = None
    overdue: bool | None = None
    resolving: bool | None = None


class SqlSagaReader:
    """`overdue_after_s`: how long after its wake time a saga no worker has claimed counts
    as overdue; well above the timers' interval, so a saga being handled never does."""

    def __init__(self, engine: AsyncEngine, overdue_after_s: float = 60.0) -> None:
        self._engine = engine
        self._overdue_after_s = overdue_after_s

    async def saga_view(self, saga_id: str, timeline_limit: int = 1000) -> dict[str, Any] | None:
        """The saga, its steps and its timeline as of one moment (one snapshot)."""
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            row = (
                (await conn.execute(sa.select(saga).where(saga.c.id == saga_id)))
                .mappings()
                .first()
            )
            if row is None:
                return None
            steps = await conn.execute(
                sa.select(saga_step)
                .where(saga_step.c.saga_id == saga_id)
                .order_by(saga_step.c.position)
            )
            timeline = await _timeline(conn, saga_id, None, timeline_limit)
            # everything that shows a saga reads it here: sealed fields leave as their mask
            view: dict[str, Any] = sealed.masked(
                {
                    **_summary(row),
                    "input": row["input"],
                    "context": row["context"],
                    "steps": [_step(s) for s in steps.mappings()],
                    "timeline": timeline,
                    "wake_at": row["wake_at"],
                }
            )
            return view

    async def list_sagas(
        self, where: SagaFilter, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Newest first, by (created_at, id): sagas created while paging land before the
        first page, so no page repeats or skips one."""
        query = sa.select(saga).order_by(saga.c.created_at.desc(), saga.c.id.desc())
        if where.statuses:
            query = query.where(saga.c.status.in_(where.statuses))
        if where.saga_type:
            query = query.where(saga.c.type == where.saga_type)
        if where.created_after:
            query = query.where(saga.c.created_at > where.created_after)
        if where.created_before:
            query = query.where(saga.c.created_at < where.created_before)
        if where.updated_before:
            query = query.where(saga.c.updated_at < where.updated_before)
        if where.parked is not None:
            query = query.where(
                saga.c.parked_at.is_not(None) if where.parked else saga.c.parked_at.is_(None)
            )
        if where.overdue is not None:
            overdue = self._overdue()
            query = query.where(overdue if where.overdue else sa.not_(overdue))
        if where.resolving is not None:
            query = query.where(_RESOLVING if where.resolving else sa.not_(_RESOLVING))
        if cursor:
            created_at, saga_id = _decode_cursor(cursor)
            query = query.where(sa.tuple_(saga.c.created_at, saga.c.id) < (created_at, saga_id))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).mappings().all()
        page = [_summary(r) for r in rows[:limit]]
        more = len(rows) > limit
        return page, _encode_cursor(rows[limit - 1]) if more else None

    async def timeline_page(
        self, saga_id: str, after: int | None, limit: int
    ) -> list[dict[str, Any]] | None:
        async with self._engine.connect() as conn:
            exists = await conn.scalar(sa.select(saga.c.id).where(saga.c.id == saga_id))
            if exists is None:
                return None
            return await _timeline(conn, saga_id, after, limit)

    async def timeline_since(
        self, saga_id: str, after: int | None, limit: int
    ) -> tuple[str, list[dict[str, Any]]] | None:
        """The saga's status and its timeline after the entry `after`, as of one snapshot:
        a settled status with fewer than `limit` entries means none is left to read. None
        when no saga has this id."""
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            status = await conn.scalar(sa.select(saga.c.status).where(saga.c.id == saga_id))
            if status is None:
                return None
            return str(status), await _timeline(conn, saga_id, after, limit)

    async def stats(self) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            counts = await conn.execute(
                sa.select(saga.c.type, saga.c.status, sa.func.count()).group_by(
                    saga.c.type, saga.c.status
                )
            )
            oldest = (
                await conn.execute(
                    sa.select(saga.c.id, saga.c.created_at)
                    .where(saga.c.status == "running")
                    .order_by(saga.c.created_at)
                    .limit(1)
                )
            ).first()
            backlog = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(outbox.c.created_at)).where(
                        outbox.c.published_at.is_(None), outbox.c.parked_at.is_(None)
                    )
                )
            ).one()
            parked = await conn.scalar(
                sa.select(sa.func.count()).where(saga.c.parked_at.is_not(None))
            )
            parked_rows = await conn.scalar(
                sa.select(sa.func.count()).where(outbox.c.parked_at.is_not(None))
            )
            overdue = await conn.execute(
                sa.select(saga.c.type, sa.func.count())
                .where(self._overdue())
                .group_by(saga.c.type)
            )
            resolving = await conn.execute(
                sa.select(saga.c.type, saga_step.c.name, sa.func.count())
                .join(saga_step, saga_step.c.saga_id == saga.c.id)
                .where(saga_step.c.status == StepStatus.RESOLVING.value)
                .group_by(saga.c.type, saga_step.c.name)
            )
        by_status: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        for saga_type, status, n in counts:
            by_status[status] = by_status.get(status, 0) + n
            by_type.setdefault(saga_type, {})[status] = n
        overdue_by_type: dict[str, int] = dict(overdue.all())
        resolving_by_step = {f"{t}.{step}": n for t, step, n in resolving}
        return {
            "by_status": by_status,
            "by_type": by_type,
            "oldest_running": {"id": str(oldest.id), "created_at": oldest.created_at}
            if oldest
            else None,
            "outbox_backlog": backlog[0],
            "outbox_oldest_unpublished_at": backlog[1],
            "parked": parked or 0,
            "outbox_parked": parked_rows or 0,
            "overdue": {
                "total": sum(overdue_by_type.values()),
                "by_type": overdue_by_type,
                "after_s": self._overdue_after_s,
            },
            "resolving": {
                "total": sum(resolving_by_step.values()),
                "by_step": resolving_by_step,
            },
        }

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _overdue(self) -> sa.ColumnElement[bool]:
        """Active, not parked, and due longer than `overdue_after_s` by the database's clock:
        no running worker has the saga's definition (or none runs). Never NULL, so that its
        negation holds every other saga."""
        after = sa.literal(timedelta(seconds=self._overdue_after_s), sa.Interval())
        return sa.and_(
            saga.c.status.in_(sorted(s.value for s in ACTIVE)),
            saga.c.parked_at.is_(None),
            saga.c.wake_at.is_not(None),
            saga.c.wake_at < sa.func.now() - after,
        )


# A step's outcome is unknown and its participant has not said yet what it did.
_RESOLVING = sa.exists().where(
    saga_step.c.saga_id == saga.c.id, saga_step.c.status == StepStatus.RESOLVING.value
)


async def _timeline(
    conn: AsyncConnection, saga_id: str, after: int | None, limit: int
) -> list[dict[str, Any]]:
    query = sa.select(saga_timeline).where(saga_timeline.c.saga_id == saga_id)
    if after is not None:
        query = query.where(saga_timeline.c.id > after)
    rows = await conn.execute(query.order_by(saga_timeline.c.id).limit(limit))
    # every reader of the timeline reads it here: sealed fields leave as their mask
    return [sealed.masked(_entry(e)) for e in rows.mappings()]


def _encode_cursor(row: sa.RowMapping) -> str:
    raw = json.dumps([row["created_at"].isoformat(), str(row["id"])]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, saga_id = json.loads(raw)
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None or _UUID.fullmatch(saga_id) is None:
            raise ValueError("not a cursor this api gave out")
        return at, saga_id
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidCursorError(f"the cursor {cursor[:100]!r} is not valid") from exc


def _summary(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "type": row["type"],
        "definition_version": row["definition_version"],
        "status": row["status"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
        "parked_reason": row["parked_reason"],
        "parked_at": row["parked_at"],
    }


def _step(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "name": row["name"],
        "status": row["status"],
        "attempt": row["attempt"],
        "compensation_attempt": row["compensation_attempt"],
        "resolve_attempt": row["resolve_attempt"],
        "deadline": row["deadline"],
        "next_attempt_at": row["next_attempt_at"],
        "result": row["result"],
        "error": row["error"],
        "updated_at": row["updated_at"],
    }


def _entry(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "id": row["id"],
        "at": row["at"],
        "kind": row["kind"],
        "step": row["step"],
        "detail": row["detail"],
        "message_id": str(row["message_id"]) if row["message_id"] else None,
    }
