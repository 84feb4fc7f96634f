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
from orchestrator.store.tables import outbox, processed_message, saga, saga_step, saga_timeline
from orchestrator.transport import codec


class SqlSagaStore:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def mark_processed(self, message_id: str, saga_id: str) -> bool:
        return bool(await self.mark_processed_many([(message_id, saga_id)]))

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record (message id, saga id) pairs as applied; return the ids not recorded before."""
        rows = [{"message_id": m, "saga_id": s} for m, s in messages]
        return {str(row.message_id) for row in await self._conn.execute(_MARK_PROCESSED, rows)}

    async def claim_due(self, now: datetime, limit: int) -> list[str]:
        rows = await self._conn.execute(
            sa.select(saga.c.id)
            .where(saga.c.wake_at <= now)
            .order_by(saga.c.wake_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [str(r.id) for r in rows]

    async def load(self, saga_id: str, *, for_update: bool) -> Saga | None:
        return (await self.load_many([saga_id], for_update=for_update)).get(saga_id)

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        """The sagas found, locked in id order (the same everywhere: no deadlocks)."""
        query = _LOAD_FOR_UPDATE if for_update else _LOAD
        rows = (await self._conn.execute(query, {"ids": list(saga_ids)})).mappings().all()
        if not rows:
            return {}
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
        await self._conn.execute(
            saga_step.insert(),
            [_step_row(new.id, i, s, now) for i, s in enumerate(new.steps.values())],
        )
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
        """Store each saga if its version is still the one loaded, else raise a conflict."""
        result = await self._conn.execute(
            _UPDATE_IF_VERSION,
            {
                "ids": [c.id for c in changed],
                "versions": [c.version for c in changed],
                "statuses": [c.status.value for c in changed],
                "contexts": [Jsonb(c.context) for c in changed],
                "wake_ats": [c.wake_at for c in changed],
                "now": now,
            },
        )
        if result.rowcount != len(changed):
            raise ConcurrencyConflictError(
                f"{len(changed) - result.rowcount} of sagas {[c.id for c in changed]} "
                "changed since they were loaded"
            )
        for c in changed:
            c.version += 1
        rows = [
            _step_row(c.id, i, s, now) for c in changed for i, s in enumerate(c.steps.values())
        ]
        await self._conn.execute(_UPSERT_STEPS, rows)

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
        """Timeline entries and outbox messages, in the order given."""
        entries = [
            {
                "saga_id": saga_id,
                "at": now,
                "kind": e.kind,
                "step": e.step,
                "detail": dict(e.detail),
                "message_id": e.message_id,
            }
            for saga_id, timeline, _ in appended
            for e in timeline
        ]
        if entries:
            await self._conn.execute(_INSERT_TIMELINE, entries)
        messages = [
            {
                "topic": p.topic,
                "key": p.message.saga_id,
                "headers": {k: v.decode() for k, v in codec.headers(p.message)},
                "value": codec.encode(p.message),
                "created_at": now,
            }
            for _, _, publications in appended
            for p in publications
        ]
        if messages:
            # one INSERT whose VALUES follow the order of decisions, and so do identities
            await self._conn.execute(_INSERT_OUTBOX, messages)


# Built once: a statement built per call costs as much again as running it. A RETURNING
# makes SQLAlchemy send many rows as one multi-row INSERT ("insertmanyvalues") rather than
# one statement per row.
_MARK_PROCESSED = (
    insert(processed_message).on_conflict_do_nothing().returning(processed_message.c.message_id)
)
_LOAD = (
    sa.select(saga).where(saga.c.id.in_(sa.bindparam("ids", expanding=True))).order_by(saga.c.id)
)
_LOAD_FOR_UPDATE = _LOAD.with_for_update()
_INSERT_SAGA = saga.insert()
_INSERT_TIMELINE = saga_timeline.insert().returning(saga_timeline.c.id)
_INSERT_OUTBOX = outbox.insert().returning(outbox.c.id)
_LOAD_STEPS = (
    sa.select(saga_step)
    .where(saga_step.c.saga_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(saga_step.c.saga_id, saga_step.c.position)
)
# Every saga of a batch in one statement: arrays in, one row out per saga still at its version.
_UPDATE_IF_VERSION = sa.text(
    """
    UPDATE saga SET status = v.status, context = v.context, updated_at = :now,
                    version = saga.version + 1, wake_at = v.wake_at
    FROM unnest(CAST(:ids AS uuid[]), CAST(:versions AS int[]), CAST(:statuses AS text[]),
                CAST(:contexts AS jsonb[]), CAST(:wake_ats AS timestamptz[]))
         AS v(id, version, status, context, wake_at)
    WHERE saga.id = v.id AND saga.version = v.version
    """
)

_STEP_MUTABLE = (
    "status",
    "attempt",
    "compensation_attempt",
    "deadline",
    "next_attempt_at",
    "result",
    "error",
    "updated_at",
)
_step_upsert = insert(saga_step)
_UPSERT_STEPS = _step_upsert.on_conflict_do_update(
    index_elements=[saga_step.c.saga_id, saga_step.c.name],
    set_={c: _step_upsert.excluded[c] for c in _STEP_MUTABLE},
).returning(saga_step.c.saga_id)


def _step_row(saga_id: str, position: int, step: StepState, now: datetime) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "name": step.name,
        "position": position,
        "status": step.status.value,
        "attempt": step.attempt,
        "compensation_attempt": step.compensation_attempt,
        "deadline": step.deadline,
        "next_attempt_at": step.next_attempt_at,
        "result": step.result,
        "error": step.error,
        "updated_at": now,
    }


def _step_state(row: sa.RowMapping) -> StepState:
    return StepState(
        name=row["name"],
        status=StepStatus(row["status"]),
        attempt=row["attempt"],
        compensation_attempt=row["compensation_attempt"],
        deadline=row["deadline"],
        next_attempt_at=row["next_attempt_at"],
        result=row["result"],
        error=row["error"],
    )
