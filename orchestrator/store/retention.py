"""What is kept no longer than it can be needed, removed in small batches of short
transactions that never wait on a row another transaction holds (SKIP LOCKED): any number of
workers may run this together, beside the traffic."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.store.errors import translated

FINISHED = ("completed", "compensated")

# ctid = ANY(ARRAY(...)): the rows found are deleted by their place, with no second search
_PURGE_PROCESSED = sa.text(
    """
    DELETE FROM processed_message WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM processed_message
        WHERE processed_at < now() - make_interval(secs => :older_than)
        LIMIT :limit FOR UPDATE SKIP LOCKED))
    """
)
_CLAIM_FINISHED = sa.text(
    """
    SELECT id FROM saga
    WHERE status = ANY(CAST(:statuses AS text[]))
      AND updated_at < now() - make_interval(secs => :older_than)
    ORDER BY status, updated_at
    LIMIT :limit FOR UPDATE SKIP LOCKED
    """
)
_SAGAS = sa.text("SELECT to_jsonb(s) FROM saga s WHERE id = ANY(:ids) ORDER BY id")
_STEPS = sa.text(
    "SELECT saga_id::text, to_jsonb(t) - 'saga_id' FROM saga_step t "
    "WHERE saga_id = ANY(:ids) ORDER BY saga_id, position"
)
_TIMELINE = sa.text(
    "SELECT saga_id::text, to_jsonb(t) - 'saga_id' FROM saga_timeline t "
    "WHERE saga_id = ANY(:ids) ORDER BY saga_id, id"
)
_DELETE_SAGAS = sa.text("DELETE FROM saga WHERE id = ANY(:ids)")  # steps, timeline: cascade

# Each archived saga: its row, its steps and its timeline, as stored.
Archived = dict[str, Any]


class SqlRetention:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def purge_processed(self, older_than_s: float, limit: int) -> int:
        """Forget up to `limit` processed replies older than `older_than_s`; how many."""
        with translated():
            async with self._engine.begin() as conn:
                params = {"older_than": older_than_s, "limit": limit}
                return (await conn.execute(_PURGE_PROCESSED, params)).rowcount

    async def remove_finished(
        self,
        older_than_s: float,
        limit: int,
        keep: Callable[[Sequence[Archived]], None] | None = None,
        statuses: Sequence[str] = FINISHED,
    ) -> int:
        """Delete up to `limit` sagas in `statuses` not updated for `older_than_s`, with their
        steps and timeline; how many. `keep` gets them first, inside the transaction: when
        it raises, nothing is deleted. A crash after `keep` returned and before the commit
        leaves them to be kept again by the next call."""
        with translated():
            async with self._engine.begin() as conn:
                params = {"statuses": list(statuses), "older_than": older_than_s, "limit": limit}
                ids = [r[0] for r in await conn.execute(_CLAIM_FINISHED, params)]
                if not ids:
                    return 0
                if keep is not None:
                    keep(await _archived(conn, ids))
                await conn.execute(_DELETE_SAGAS, {"ids": ids})
                return len(ids)


async def _archived(conn: Any, ids: list[str]) -> list[Archived]:
    sagas = [dict(r[0]) for r in await conn.execute(_SAGAS, {"ids": ids})]
    steps: dict[str, list[Any]] = {}
    for saga_id, step in await conn.execute(_STEPS, {"ids": ids}):
        steps.setdefault(saga_id, []).append(step)
    timeline: dict[str, list[Any]] = {}
    for saga_id, entry in await conn.execute(_TIMELINE, {"ids": ids}):
        timeline.setdefault(saga_id, []).append(entry)
    return [
        {**s, "steps": steps.get(s["id"], []), "timeline": timeline.get(s["id"], [])}
        for s in sagas
    ]
