"""The saga store on PostgreSQL: one connection, inside the unit of work's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
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
        stmt = (
            insert(processed_message)
            .values(message_id=message_id, saga_id=saga_id)
            .on_conflict_do_nothing()
            .returning(processed_message.c.message_id)
        )
        return (await self._conn.execute(stmt)).first() is not None

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
        query = sa.select(saga).where(saga.c.id == saga_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).mappings().first()
        if row is None:
            return None
        steps = await self._conn.execute(
            sa.select(saga_step).where(saga_step.c.saga_id == saga_id).order_by("position")
        )
        return Saga(
            id=str(row["id"]),
            type=row["type"],
            definition_version=row["definition_version"],
            status=SagaStatus(row["status"]),
            input=row["input"],
            context=row["context"],
            steps={s["name"]: _step_state(s) for s in steps.mappings()},
            version=row["version"],
            started_at=row["created_at"],
            trace_id=row["trace_id"] or "",
        )

    async def insert(self, new: Saga, now: datetime, idempotency: Idempotency | None) -> None:
        try:
            async with self._conn.begin_nested():
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
            saga.insert().values(
                id=new.id,
                type=new.type,
                definition_version=new.definition_version,
                status=new.status.value,
                input=new.input,
                context=new.context,
                created_at=now,
                updated_at=now,
                version=1,
                wake_at=new.wake_at,
                trace_id=new.trace_id or None,
                idempotency_key=idempotency.key if idempotency else None,
                request_hash=idempotency.request_hash if idempotency else None,
            )
        )

    async def update(self, changed: Saga, now: datetime) -> None:
        result = await self._conn.execute(
            saga.update()
            .where(saga.c.id == changed.id, saga.c.version == changed.version)
            .values(
                status=changed.status.value,
                context=changed.context,
                updated_at=now,
                version=changed.version + 1,
                wake_at=changed.wake_at,
            )
        )
        if result.rowcount != 1:
            raise ConcurrencyConflictError(
                f"saga {changed.id} changed since version {changed.version}"
            )
        changed.version += 1
        rows = [_step_row(changed.id, i, s, now) for i, s in enumerate(changed.steps.values())]
        stmt = insert(saga_step).values(rows)
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[saga_step.c.saga_id, saga_step.c.name],
                set_={c: stmt.excluded[c] for c in _STEP_MUTABLE},
            )
        )

    async def append(
        self,
        saga_id: str,
        timeline: Sequence[TimelineEntry],
        publications: Sequence[Publication],
        now: datetime,
    ) -> None:
        if timeline:
            await self._conn.execute(
                saga_timeline.insert(),
                [
                    {
                        "saga_id": saga_id,
                        "at": now,
                        "kind": e.kind,
                        "step": e.step,
                        "detail": dict(e.detail),
                        "message_id": e.message_id,
                    }
                    for e in timeline
                ],
            )
        if publications:
            await self._conn.execute(
                outbox.insert(),
                [
                    {
                        "topic": p.topic,
                        "key": p.message.saga_id,
                        "headers": {k: v.decode() for k, v in codec.headers(p.message)},
                        "value": codec.encode(p.message),
                        "created_at": now,
                    }
                    for p in publications
                ],
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
