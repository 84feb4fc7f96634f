"""Read models for the API: what operators see of a saga."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.tables import saga, saga_step, saga_timeline


class SqlSagaReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def saga_view(self, saga_id: str) -> dict[str, Any] | None:
        async with self._engine.connect() as conn:
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
            timeline = await conn.execute(
                sa.select(saga_timeline)
                .where(saga_timeline.c.saga_id == saga_id)
                .order_by(saga_timeline.c.id)
            )
            return {
                "id": str(row["id"]),
                "type": row["type"],
                "definition_version": row["definition_version"],
                "status": row["status"],
                "input": row["input"],
                "context": row["context"],
                "steps": [_step(s) for s in steps.mappings()],
                "timeline": [_entry(e) for e in timeline.mappings()],
                "created_at": row["created_at"],
                "updated_at": row["updated_at"],
                "version": row["version"],
            }


def _step(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "name": row["name"],
        "status": row["status"],
        "attempt": row["attempt"],
        "compensation_attempt": row["compensation_attempt"],
        "deadline": row["deadline"],
        "next_attempt_at": row["next_attempt_at"],
        "result": row["result"],
        "error": row["error"],
        "updated_at": row["updated_at"],
    }


def _entry(row: sa.RowMapping) -> dict[str, Any]:
    return {
        "at": row["at"],
        "kind": row["kind"],
        "step": row["step"],
        "detail": row["detail"],
        "message_id": str(row["message_id"]) if row["message_id"] else None,
    }
