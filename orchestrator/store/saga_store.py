"""The saga store on PostgreSQL: one connection, inside the unit of work's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from psycopg.types.json import Jsonb
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator.ports import DuplicateIdempotencyKeyError, Idempotency, Publication
from orchestrator.saga.errors import ConcurrencyConflictError
from orchestrator.saga.machine import SagaStatus, StepStatus
from orchestrator.saga.saga import Saga, StepState, TimelineEntry
from orchestrator.store.tables import processed_message, saga, saga_step
from orchestrator.transport import codec


class SqlSagaStore:
    """Reads go to the database at once; writes are collected and sent by `flush` (the unit
    of work calls it before committing) as one statement, whatever the number of sagas."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        self._updated: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        self._timeline: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        self._now: datetime | None = None

    async def mark_processed(self, message_id: str, saga_id: str) -> bool:
        return bool(await self.mark_processed_many([(message_id, saga_id)]))

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record (message id, saga id) pairs as applied; return the ids not recorded before."""
        rows = [{"message_id": m, "saga_id": s} for m, s in messages]
        return {str(row.message_id) for row in await self._conn.execute(_MARK_PROCESSED, rows)}

    async def now(self) -> datetime:
        """The database's time for this transaction: one clock for every process."""
        if self._now is None:
            self._now = await self._conn.scalar(_NOW)
            assert self._now is not None
        return self._now

    async def claim_due(
        self, limit: int, known: Sequence[tuple[str, int]], orphaned_after_s: float
    ) -> list[str]:
        """Lock sagas whose wake time has come by the database's clock, skipping those locked
        elsewhere and those parked for an operator (their wake time is cleared)."""
        params = {
            "limit": limit,
            "types": [t for t, _ in known],
            "versions": [v for _, v in known],
            "orphaned_after_s": orphaned_after_s,
        }
        return [str(r.id) for r in await self._conn.execute(_CLAIM_DUE, params)]

    async def load(self, saga_id: str, *, for_update: bool) -> Saga | None:
        return (await self.load_many([saga_id], for_update=for_update)).get(saga_id)

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        """The sagas found, locked in id order (the same everywhere: no deadlocks)."""
        query = _LOAD_FOR_UPDATE if for_update else _LOAD
        rows = (await self._conn.execute(query, {"ids": list(saga_ids)})).mappings().all()
        if not rows:
            return {}
        self._now = rows[0]["db_now"]
        steps: dict[str, dict[str, StepState]] = {str(r["id"]): {} for r in rows}
        step_rows = await self._conn.execute(_LOAD_STEPS, {"ids": list(steps)})
        for s in step_rows.mappings():
            steps[str(s["saga_id"])][s["name"]] = _step_state(s)
        return {
            str(row["id"]): Saga(
                id=str(row["id"]),
                type=row["type"],
                definition_version=row["definition_version"],
                status=SagaStatus(row["status"]),
                input=row["input"],
                context=row["context"],
                steps=steps[str(row["id"])],
                version=row["version"],
                started_at=row["created_at"],
                trace_id=row["trace_id"] or "",
                parked=row["parked_reason"],
            )
            for row in rows
        }

    async def insert(self, new: Saga, now: datetime, idempotency: Idempotency | None) -> None:
        try:  # a taken key aborts the transaction, which the caller then rolls back
            await self._insert_saga(new, now, idempotency)
        except sa_exc.IntegrityError as exc:
            if "uq_saga_idempotency_key" in str(exc.orig):
                raise DuplicateIdempotencyKeyError(idempotency) from exc
            raise
        self._steps += [_step_row(new.id, i, s, now) for i, s in enumerate(new.steps.values())]
        new.version = 1

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        row = (
            await self._conn.execute(
                sa.select(saga.c.id, saga.c.request_hash).where(saga.c.idempotency_key == key)
            )
        ).first()
        if row is None:
            return None
        found = await self.load(str(row.id), for_update=False)
        assert found is not None
        return found, row.request_hash

    async def _insert_saga(
        self, new: Saga, now: datetime, idempotency: Idempotency | None
    ) -> None:
        await self._conn.execute(
            _INSERT_SAGA,
            {
                "id": new.id,
                "type": new.type,
                "definition_version": new.definition_version,
                "status": new.status.value,
                "input": new.input,
                "context": new.context,
                "created_at": now,
                "updated_at": now,
                "version": 1,
                "wake_at": new.wake_at,
                "trace_id": new.trace_id or None,
                "idempotency_key": idempotency.key if idempotency else None,
                "request_hash": idempotency.request_hash if idempotency else None,
            },
        )

    async def update(self, changed: Saga, now: datetime) -> None:
        await self.update_many([changed], now)

    async def update_many(self, changed: Sequence[Saga], now: datetime) -> None:
        """Store each saga if its version is still the one loaded; `flush` raises a conflict
        otherwise."""
        for c in changed:
            self._updated.append(
                {
                    "id": c.id,
                    "version": c.version,
                    "status": c.status.value,
                    "context": Jsonb(c.context),
                    "wake_at": c.wake_at,
                    "parked_reason": c.parked,
                    "updated_at": now,
                }
            )
            c.version += 1
            self._steps += [_step_row(c.id, i, s, now) for i, s in enumerate(c.steps.values())]

    async def append(
        self,
        saga_id: str,
        timeline: Sequence[TimelineEntry],
        publications: Sequence[Publication],
        now: datetime,
    ) -> None:
        await self.append_many([(saga_id, timeline, publications)], now)

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        """Timeline entries and outbox messages, in the order given. A message that cannot be
        encoded raises before anything of this call is collected."""
        for saga_id, timeline, publications in appended:
            outbox_rows = [
                {
                    "topic": p.topic,
                    "key": p.message.saga_id,
                    "headers": Jsonb({k: v.decode() for k, v in codec.headers(p.message)}),
                    "value": codec.encode(p.message),
                    "created_at": now,
                }
                for p in publications
            ]
            self._outbox += outbox_rows
            self._timeline += [
                {
                    "saga_id": saga_id,
                    "at": now,
                    "kind": e.kind,
                    "step": e.step,
                    "detail": Jsonb(dict(e.detail)),
                    "message_id": e.message_id,
                }
                for e in timeline
            ]

    async def flush(self) -> None:
        """Write what the transaction collected in one statement: the saga updates (each at
        the version it was loaded at), their steps, timeline entries and outbox messages."""
        if not (self._updated or self._steps or self._timeline or self._outbox):
            return
        updated = self._updated
        params: dict[str, Any] = {
            **_columns(updated, _UPDATED_COLUMNS, "saga_"),
            **_columns(self._steps, _STEP_COLUMNS, "step_"),
            **_columns(self._timeline, _TIMELINE_COLUMNS, "timeline_"),
            **_columns(self._outbox, _OUTBOX_COLUMNS, "outbox_"),
        }
        self._updated, self._steps, self._timeline, self._outbox = [], [], [], []
        stored = await self._conn.scalar(_WRITE, params)
        if stored != len(updated):
            raise ConcurrencyConflictError(
                f"{len(updated) - (stored or 0)} of sagas {[u['id'] for u in updated]} "
                "changed since they were loaded"
            )


# Built once: a statement built per call costs as much again as running it. A RETURNING
# makes SQLAlchemy send many rows as one multi-row INSERT ("insertmanyvalues") rather than
# one statement per row.
_MARK_PROCESSED = (
    insert(processed_message).on_conflict_do_nothing().returning(processed_message.c.message_id)
)
_LOAD = (  # with the transaction's time, which saves a round trip for `now()`
    sa.select(saga, sa.func.now().label("db_now"))
    .where(saga.c.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(saga.c.id)
)
_LOAD_FOR_UPDATE = _LOAD.with_for_update()
_NOW = sa.select(sa.func.now())
# A worker claims the sagas whose definition it has; one overdue by `orphaned_after_s` (no
# worker has decided it: its definition may be gone everywhere) it claims whatever the type.
_CLAIM_DUE = sa.text(
    """
    SELECT id FROM saga
    WHERE wake_at <= now()
      AND ((type, definition_version) IN
               (SELECT * FROM unnest(CAST(:types AS text[]), CAST(:versions AS int[])))
           OR wake_at < now() - make_interval(secs => :orphaned_after_s))
    ORDER BY wake_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_INSERT_SAGA = saga.insert()
_LOAD_STEPS = (
    sa.select(saga_step)
    .where(saga_step.c.saga_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(saga_step.c.saga_id, saga_step.c.position)
)
_STEP_MUTABLE = (
    "status",
    "attempt",
    "compensation_attempt",
    "retry_base",
    "compensation_base",
    "deadline",
    "next_attempt_at",
    "result",
    "error",
    "updated_at",
)
_UPDATED_COLUMNS = {
    "id": "uuid",
    "version": "int",
    "status": "text",
    "context": "jsonb",
    "wake_at": "timestamptz",
    "parked_reason": "text",
    "updated_at": "timestamptz",
}
_STEP_COLUMNS = {
    "saga_id": "uuid",
    "name": "text",
    "position": "int",
    "status": "text",
    "attempt": "int",
    "compensation_attempt": "int",
    "retry_base": "int",
    "compensation_base": "int",
    "deadline": "timestamptz",
    "next_attempt_at": "timestamptz",
    "result": "jsonb",
    "error": "jsonb",
    "updated_at": "timestamptz",
}
_TIMELINE_COLUMNS = {
    "saga_id": "uuid",
    "at": "timestamptz",
    "kind": "text",
    "step": "text",
    "detail": "jsonb",
    "message_id": "uuid",
}
_OUTBOX_COLUMNS = {
    "topic": "text",
    "key": "text",
    "headers": "jsonb",
    "value": "bytea",
    "created_at": "timestamptz",
}


def _unnest_insert(table: str, columns: dict[str, str], prefix: str) -> str:
    """INSERT of rows given as one array per column, in the order of the arrays."""
    names = ", ".join(columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {names} "
        f"FROM unnest({_arrays(columns, prefix)}) WITH ORDINALITY AS u({names}, n) ORDER BY n"
    )


def _arrays(columns: dict[str, str], prefix: str) -> str:
    return ", ".join(f"CAST(:{prefix}{c} AS {t}[])" for c, t in columns.items())


def _columns(
    rows: Sequence[dict[str, Any]], columns: dict[str, str], prefix: str
) -> dict[str, list[Any]]:
    return {f"{prefix}{c}": [r[c] for r in rows] for c in columns}


# Every write of a transaction in one statement, parameters as arrays: one round trip and
# one compiled statement, for one saga or five hundred. Outbox identities follow the order
# of the arrays, which is the order of the decisions.
_WRITE = sa.text(
    f"""
    WITH updated AS (
        UPDATE saga SET status = v.status, context = v.context, updated_at = v.updated_at,
                        version = saga.version + 1, wake_at = v.wake_at,
                        parked_reason = v.parked_reason,
                        parked_at = CASE WHEN v.parked_reason IS NULL THEN NULL
                                         ELSE coalesce(saga.parked_at, v.updated_at) END
        FROM unnest({_arrays(_UPDATED_COLUMNS, "saga_")}) AS v({", ".join(_UPDATED_COLUMNS)})
        WHERE saga.id = v.id AND saga.version = v.version
        RETURNING saga.id
    ), steps AS (
        {_unnest_insert("saga_step", _STEP_COLUMNS, "step_")}
        ON CONFLICT (saga_id, name) DO UPDATE SET
            {", ".join(f"{c} = EXCLUDED.{c}" for c in _STEP_MUTABLE)}
    ), timeline AS (
        {_unnest_insert("saga_timeline", _TIMELINE_COLUMNS, "timeline_")}
    ), messages AS (
        {_unnest_insert("outbox", _OUTBOX_COLUMNS, "outbox_")}
    )
    SELECT count(*) FROM updated
    """
)


def _step_row(saga_id: str, position: int, step: StepState, now: datetime) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "name": step.name,
        "position": position,
        "status": step.status.value,
        "attempt": step.attempt,
        "compensation_attempt": step.compensation_attempt,
        "retry_base": step.retry_base,
        "compensation_base": step.compensation_base,
        "deadline": step.deadline,
        "next_attempt_at": step.next_attempt_at,
        "result": Jsonb(step.result),
        "error": Jsonb(step.error),
        "updated_at": now,
    }


def _step_state(row: sa.RowMapping) -> StepState:
    return StepState(
        name=row["name"],
        status=StepStatus(row["status"]),
        attempt=row["attempt"],
        compensation_attempt=row["compensation_attempt"],
        retry_base=row["retry_base"],
        compensation_base=row["compensation_base"],
        deadline=row["deadline"],
        next_attempt_at=row["next_attempt_at"],
        result=row["result"],
        error=row["error"],
    )
