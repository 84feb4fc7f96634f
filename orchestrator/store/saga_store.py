"""The saga store on PostgreSQL: one connection, inside the unit of work's transaction."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from sqlalchemy.ext.asyncio import AsyncConnection

from orchestrator import codec, signing
from orchestrator.ports import (
    Idempotency,
    OutboxMessage,
    PendingMarks,
    Publication,
)
from orchestrator.saga.errors import ConcurrencyConflictError
from orchestrator.saga.machine import SagaStatus, StepStatus
from orchestrator.saga.saga import Saga, StepState, TimelineEntry
from orchestrator.signing import MessageKeys


class SqlSagaStore:
    """Reads go to the database at once; writes are collected and sent by `flush` (the unit
    of work calls it before committing) as one statement, whatever the number of sagas.

    Statements go to psycopg directly, on the unit of work's connection and transaction:
    built once as text, prepared by the server after a few uses, with no per-call
    compilation."""

    def __init__(
        self,
        conn: AsyncConnection,
        marks: PendingMarks | None = None,
        keys: MessageKeys | None = None,
    ) -> None:
        self._conn = conn
        self._marks = marks
        self._keys = keys
        self.marked: list[int] = []  # outbox rows this transaction marks published
        self._inserted: list[dict[str, Any]] = []
        self._updated: list[dict[str, Any]] = []
        self._steps: list[dict[str, Any]] = []
        self._timeline: list[dict[str, Any]] = []
        self._outbox: list[dict[str, Any]] = []
        self._now: datetime | None = None
        self.outgoing: list[OutboxMessage] = []  # what this transaction wrote to the outbox
        self._pending_first: list[str] = []
        self._raw: psycopg.AsyncConnection[Any] | None = None
        self._loaded: dict[tuple[str, str], str] = {}  # (saga, step) -> the step as loaded

    async def _pg(self) -> psycopg.AsyncConnection[Any]:
        if self._raw is None:
            self._raw = (await self._conn.get_raw_connection()).driver_connection
        assert self._raw is not None
        return self._raw

    async def _rows(self, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        cursor = await (await self._pg()).execute(query, params)
        return await cursor.fetchall()

    async def _dicts(self, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        cursor = (await self._pg()).cursor(row_factory=dict_row)
        await cursor.execute(query, params)
        return await cursor.fetchall()

    async def mark_processed_many(self, messages: Sequence[tuple[str, str]]) -> set[str]:
        """Record (message id, saga id) pairs as applied; return the ids not recorded before."""
        params = {"ids": [m for m, _ in messages], "sagas": [s for _, s in messages]}
        return {row[0] for row in await self._rows(_MARK_PROCESSED, params)}

    async def forget_processed(self, message_ids: Sequence[str]) -> None:
        await (await self._pg()).execute(_FORGET_PROCESSED, {"ids": list(message_ids)})

    async def publish_pending_first(self, saga_ids: Sequence[str]) -> None:
        self._pending_first += saga_ids

    async def now(self) -> datetime:
        """The database's time for this transaction: one clock for every process. Read from
        the database at most every `_CLOCK.max_age_s`, and kept as an offset in between."""
        if self._now is None:
            self._now = _CLOCK.now()
            if self._now is None:
                (db_now,) = (await self._rows(_NOW, {}))[0]
                self._now = _CLOCK.learn(db_now)
        return self._now

    async def claim_due(self, limit: int, known: Sequence[tuple[str, int]]) -> list[str]:
        """Lock sagas of the known (type, version) pairs whose wake time has come by the
        database's clock, skipping those locked elsewhere and those parked for an operator
        (their wake time is cleared)."""
        types, versions = [t for t, _ in known], [v for _, v in known]
        params = {"limit": limit, "types": types, "versions": versions}
        return [r[0] for r in await self._rows(_CLAIM_DUE, params)]

    async def next_wake(self, known: Sequence[tuple[str, int]]) -> datetime | None:
        params = {"types": [t for t, _ in known], "versions": [v for _, v in known]}
        rows = await self._rows(_NEXT_WAKE, params)
        return rows[0][0] if rows else None

    async def load_many(self, saga_ids: Sequence[str], *, for_update: bool) -> dict[str, Saga]:
        """The sagas found, locked in id order (the same everywhere: no deadlocks)."""
        query = _LOAD_FOR_UPDATE if for_update else _LOAD
        rows = await self._dicts(query, {"ids": list(saga_ids)})
        if not rows:
            return {}
        step_rows = await self._dicts(_LOAD_STEPS, {"ids": [r["id"] for r in rows]})
        return self._sagas(rows, step_rows)

    async def claim_replies(
        self, messages: Sequence[tuple[str, str]]
    ) -> tuple[set[str], dict[str, Saga]]:
        """Record the (message id, saga id) pairs as applied and load the sagas they name,
        locked: in one round trip (psycopg's pipeline mode), the three statements running
        one after the other, so the steps are read after the saga rows are locked."""
        saga_ids = sorted({saga_id for _, saga_id in messages})
        pg = await self._pg()
        marked = pg.cursor()
        loaded = pg.cursor(row_factory=dict_row)
        steps = pg.cursor(row_factory=dict_row)
        async with pg.pipeline():
            await marked.execute(
                _MARK_PROCESSED,
                {"ids": [m for m, _ in messages], "sagas": [s for _, s in messages]},
            )
            await loaded.execute(_LOAD_FOR_UPDATE, {"ids": saga_ids})
            await steps.execute(_LOAD_STEPS, {"ids": saga_ids})
        fresh = {row[0] for row in await marked.fetchall()}
        rows = await loaded.fetchall()
        return fresh, self._sagas(rows, await steps.fetchall()) if rows else {}

    def _sagas(
        self, rows: Sequence[dict[str, Any]], step_rows: Sequence[dict[str, Any]]
    ) -> dict[str, Saga]:
        db_now = _CLOCK.learn(rows[0]["db_now"])
        self._now = self._now or db_now  # once given, the transaction's time stays
        steps: dict[str, dict[str, StepState]] = {r["id"]: {} for r in rows}
        for s in step_rows:
            step = steps[s["saga_id"]][s["name"]] = _step_state(s)
            self._loaded[s["saga_id"], s["name"]] = repr(step)
        return {
            row["id"]: Saga(
                id=row["id"],
                type=row["type"],
                definition_version=row["definition_version"],
                status=SagaStatus(row["status"]),
                input=row["input"],
                context=row["context"],
                steps=steps[row["id"]],
                version=row["version"],
                started_at=row["created_at"],
                trace_id=row["trace_id"] or "",
                parked=row["parked_reason"],
            )
            for row in rows
        }

    async def insert_many(
        self, new: Sequence[tuple[Saga, Idempotency | None]], now: datetime
    ) -> None:
        """Store new sagas; `flush` returns those not stored because their id or their
        idempotency key was taken (their steps, timeline and messages are not stored)."""
        await self._release_expired_keys([i for _, i in new if i is not None], now)
        for saga_row, idempotency in new:
            self._inserted.append(
                {
                    "id": saga_row.id,
                    "type": saga_row.type,
                    "definition_version": saga_row.definition_version,
                    "status": saga_row.status.value,
                    "input": saga_row.input,
                    "context": saga_row.context,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                    "wake_at": saga_row.wake_at,
                    "trace_id": saga_row.trace_id or None,
                    "idempotency_key": idempotency.key if idempotency else None,
                    "request_hash": idempotency.request_hash if idempotency else None,
                }
            )
            self._steps += [
                _step_row(saga_row.id, i, st, now) for i, st in enumerate(saga_row.steps.values())
            ]
            saga_row.version = 1

    async def _release_expired_keys(self, keys: Sequence[Idempotency], now: datetime) -> None:
        """A key whose saga is older than its expiry starts a new saga: the old one lets go
        of it (its row lock makes a concurrent start with the key wait for this one)."""
        by_expiry: dict[float, list[str]] = {}
        for idempotency in keys:
            if idempotency.expires_after_s is not None:
                by_expiry.setdefault(idempotency.expires_after_s, []).append(idempotency.key)
        for expires_after_s, expiring in by_expiry.items():
            await self._rows(
                _RELEASE_KEYS,
                {"keys": expiring, "before": now - timedelta(seconds=expires_after_s)},
            )

    async def find_by_idempotency_key(self, key: str) -> tuple[Saga, str] | None:
        rows = await self._rows(_BY_KEY, {"key": key})
        if not rows:
            return None
        saga_id, request_hash = rows[0]
        found = await self.load_many([saga_id], for_update=False)
        return found[saga_id], request_hash

    async def update_many(self, changed: Sequence[Saga], now: datetime) -> None:
        """Store each saga if its version is still the one loaded; `flush` raises a conflict
        otherwise."""
        for c in changed:
            self._updated.append(
                {
                    "id": c.id,
                    "version": c.version,
                    "status": c.status.value,
                    "context": c.context,
                    "wake_at": c.wake_at,
                    "parked_reason": c.parked,
                    "updated_at": now,
                }
            )
            c.version += 1
            self._steps += [  # the steps that changed since they were loaded
                _step_row(c.id, i, s, now)
                for i, s in enumerate(c.steps.values())
                if self._loaded.get((c.id, s.name)) != repr(s)
            ]

    async def append_many(
        self,
        appended: Sequence[tuple[str, Sequence[TimelineEntry], Sequence[Publication]]],
        now: datetime,
    ) -> None:
        """Timeline entries and outbox messages, in the order given. A message that cannot be
        encoded raises before anything of this call is collected."""
        for saga_id, timeline, publications in appended:
            outgoing = [self._outgoing(p) for p in publications]
            self.outgoing += outgoing
            self._outbox += [
                {
                    "topic": m.topic,
                    "key": m.key,
                    "headers": {k: v.decode() for k, v in m.headers},
                    "value": m.value.decode(),  # the codec writes UTF-8 JSON
                    "n": len(self._outbox) + i,
                    "created_at": now,
                }
                for i, m in enumerate(outgoing)
            ]
            self._timeline += [
                {
                    "saga_id": saga_id,
                    "at": now,
                    "kind": e.kind,
                    "step": e.step,
                    "detail": dict(e.detail),
                    "message_id": e.message_id,
                    "n": len(self._timeline) + i,
                }
                for i, e in enumerate(timeline)
            ]

    def _outgoing(self, publication: Publication) -> OutboxMessage:
        value = codec.encode(publication.message)
        headers = codec.headers(publication.message)
        if self._keys is not None:
            headers.append(self._keys.sign(value, signing.ORCHESTRATOR, publication.recipient))
        return OutboxMessage(publication.topic, publication.message.saga_id, value, tuple(headers))

    async def flush(self) -> set[str]:
        """Write what the transaction collected in one statement: new sagas, the saga updates
        (each at the version it was loaded at), their steps, timeline entries and outbox
        messages. Return the new sagas not stored, their id or idempotency key being taken."""
        if not (self._inserted or self._updated or self._steps or self._timeline or self._outbox):
            return set()
        updated, new_ids = self._updated, [r["id"] for r in self._inserted]
        written = len(self.outgoing) - len(self._outbox)  # where this flush's messages start
        if self._marks is not None:
            self.marked += self._marks.take()
        params: dict[str, Any] = {
            "new_ids": _json(new_ids),
            "marked": self.marked,
            "inserted": _json(self._inserted),
            "updated": _json(updated),
            "steps": _json(self._steps),
            "timeline": _json(self._timeline),
            "outbox": _json(self._outbox),
        }
        self._inserted, self._updated, self._steps, self._timeline, self._outbox = (
            [],
            [],
            [],
            [],
            [],
        )
        pending = await self._pending(self._pending_first) if self._pending_first else []
        self._pending_first = []
        own = {m.id for m in self.outgoing[:written]}  # written by an earlier flush of this one
        pending = [m for m in pending if m.id not in own]
        stored, ids, inserted = (await self._rows(_WRITE, params))[0]
        if stored != len(updated):
            raise ConcurrencyConflictError(
                f"{len(updated) - (stored or 0)} of sagas {[u['id'] for u in updated]} "
                "changed since they were loaded"
            )
        refused = set(new_ids) - set(inserted or [])
        fresh = [m for m in self.outgoing[written:] if m.key not in refused]
        for message, row_id in zip(fresh, ids or [], strict=True):
            message.id = row_id
        self.outgoing = [*pending, *self.outgoing[:written], *fresh]
        return refused

    async def _pending(self, saga_ids: Sequence[str]) -> list[OutboxMessage]:
        rows = await self._rows(_PENDING, {"keys": list(saga_ids)})
        return [
            OutboxMessage(topic, key, value, headers_of(headers), row_id)
            for row_id, topic, key, headers, value in rows
        ]


_MARK_PROCESSED = """
    INSERT INTO processed_message (message_id, saga_id)
    SELECT * FROM unnest(%(ids)s::uuid[], %(sagas)s::uuid[])
    ON CONFLICT DO NOTHING
    RETURNING message_id::text
"""
_FORGET_PROCESSED = """
    DELETE FROM processed_message WHERE message_id = ANY(%(ids)s::uuid[])
"""
# with the transaction's time, which saves a round trip for `now()`
_LOAD = """
    SELECT id::text, type, definition_version, status, input, context, version, created_at,
           trace_id, parked_reason, now() AS db_now
    FROM saga WHERE id = ANY(%(ids)s::uuid[]) ORDER BY id
"""
_LOAD_FOR_UPDATE = _LOAD + " FOR UPDATE"
_LOAD_STEPS = """
    SELECT saga_id::text, name, status, attempt, compensation_attempt, resolve_attempt,
           retry_base, compensation_base, deadline, next_attempt_at, result, error,
           command_id::text
    FROM saga_step WHERE saga_id = ANY(%(ids)s::uuid[]) ORDER BY saga_id, position
"""
_BY_KEY = "SELECT id::text, request_hash FROM saga WHERE idempotency_key = %(key)s"
_RELEASE_KEYS = """
    UPDATE saga SET idempotency_key = NULL
    WHERE idempotency_key = ANY(%(keys)s::text[]) AND created_at < %(before)s
    RETURNING id::text
"""
_NOW = "SELECT now()"


def as_psycopg(query: str) -> str:
    """`:name` placeholders as psycopg's `%(name)s`, whitespace folded: psycopg caches the
    parsing of statements up to 4 KiB, and folded, the largest one here fits."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", " ".join(query.split()))


class _DatabaseClock:
    """The database's time, as an offset from this process's clock, read anew at most every
    `max_age_s`: a start needs the time (for its deadlines) and no other round trip."""

    def __init__(self, max_age_s: float = 10.0) -> None:
        self.max_age_s = max_age_s
        self._offset = timedelta(0)
        self._learned_at = -math.inf

    def now(self) -> datetime | None:
        if time.monotonic() - self._learned_at > self.max_age_s:
            return None
        return datetime.now(UTC) + self._offset

    def learn(self, db_now: datetime) -> datetime:
        self._offset = db_now - datetime.now(UTC)
        self._learned_at = time.monotonic()
        return db_now


_CLOCK = _DatabaseClock()
# A worker claims only the sagas whose definition it has: however late, another's saga is
# left to the worker that has its definition (the api counts it overdue meanwhile).
_CLAIM_DUE = as_psycopg(
    """
    SELECT id::text FROM saga
    WHERE wake_at <= now()
      AND (type, definition_version) IN
          (SELECT * FROM unnest(CAST(:types AS text[]), CAST(:versions AS int[])))
    ORDER BY wake_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
    """
)
_NEXT_WAKE = as_psycopg(
    """
    SELECT wake_at FROM saga
    WHERE wake_at IS NOT NULL
      AND (type, definition_version) IN
          (SELECT * FROM unnest(CAST(:types AS text[]), CAST(:versions AS int[])))
    ORDER BY wake_at
    LIMIT 1
    """
)
_STEP_MUTABLE = (
    "status",
    "attempt",
    "compensation_attempt",
    "resolve_attempt",
    "command_id",
    "retry_base",
    "compensation_base",
    "deadline",
    "next_attempt_at",
    "result",
    "error",
    "updated_at",
)
_INSERTED_COLUMNS = {
    "id": "uuid",
    "type": "text",
    "definition_version": "int",
    "status": "text",
    "input": "jsonb",
    "context": "jsonb",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "version": "int",
    "wake_at": "timestamptz",
    "trace_id": "text",
    "idempotency_key": "text",
    "request_hash": "text",
}
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
    "resolve_attempt": "int",
    "command_id": "uuid",
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


def _json_insert(
    table: str, columns: dict[str, str], rows: str, where: str = "", ordered: bool = False
) -> str:
    """INSERT of the rows of a JSON array (`rows` names the parameter), in their order when
    `ordered` (each row then carries its position, `n`)."""
    names = ", ".join(columns)
    selected = ", ".join(_SELECTED.get(c, c) for c in columns)
    return (
        f"INSERT INTO {table} ({names}) SELECT {selected} "
        f"FROM {_recordset(columns, rows, ordered)} "
        f"{'WHERE ' + where if where else ''} {'ORDER BY n' if ordered else ''}"
    )


def _recordset(columns: dict[str, str], rows: str, ordered: bool = False, alias: str = "u") -> str:
    typed = ", ".join(f"{c} {_AS_JSON.get(t, t)}" for c, t in columns.items())
    return f"jsonb_to_recordset(:{rows}::jsonb) AS {alias}({typed}{', n int' if ordered else ''})"


_AS_JSON = {"bytea": "text"}  # JSON carries the outbox value as text
_SELECTED = {"value": "convert_to(value, 'UTF8')"}
# the rows of a new saga go in only with the saga (not when its id or key was taken)
_OF_STORED_SAGA = (
    "(u.saga_id NOT IN (SELECT jsonb_array_elements_text(:new_ids::jsonb)::uuid) "
    "OR u.saga_id IN (SELECT id FROM inserted))"
)


def _json(rows: Any) -> str:
    """Rows as one JSON text: a parameter that costs one dump, whatever their number."""
    try:
        return orjson.dumps(rows).decode()
    except TypeError:  # an integer beyond 64 bits, which only the standard library writes
        return json.dumps(rows, default=_iso, allow_nan=False)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


# Every write of a transaction in one statement, each table's rows as one JSON array: one
# round trip and one prepared statement, for one saga or five hundred. Outbox identities
# follow the order of the array, which is the order of the decisions.
_WRITE = as_psycopg(
    f"""
    WITH inserted AS (
        {_json_insert("saga", _INSERTED_COLUMNS, "inserted")}
        ON CONFLICT DO NOTHING
        RETURNING id
    ), updated AS (
        UPDATE saga SET status = v.status, context = v.context, updated_at = v.updated_at,
                        version = saga.version + 1, wake_at = v.wake_at,
                        parked_reason = v.parked_reason,
                        parked_at = CASE WHEN v.parked_reason IS NULL THEN NULL
                                         ELSE coalesce(saga.parked_at, v.updated_at) END
        FROM {_recordset(_UPDATED_COLUMNS, "updated", alias="v")}
        WHERE saga.id = v.id AND saga.version = v.version
        RETURNING saga.id
    ), steps AS (
        {_json_insert("saga_step", _STEP_COLUMNS, "steps", _OF_STORED_SAGA)}
        ON CONFLICT (saga_id, name) DO UPDATE SET
            {", ".join(f"{c} = EXCLUDED.{c}" for c in _STEP_MUTABLE)}
    ), timeline AS (
        {_json_insert("saga_timeline", _TIMELINE_COLUMNS, "timeline", _OF_STORED_SAGA, True)}
    ), marked AS (
        UPDATE outbox SET published_at = now()
        WHERE id = ANY(:marked::bigint[]) AND published_at IS NULL
    ), messages AS (
        {
        _json_insert(
            "outbox",
            _OUTBOX_COLUMNS,
            "outbox",
            _OF_STORED_SAGA.replace("u.saga_id", "CAST(u.key AS uuid)"),
            ordered=True,
        )
    }
        RETURNING id
    )
    SELECT (SELECT count(*) FROM updated), (SELECT array_agg(id ORDER BY id) FROM messages),
           (SELECT array_agg(id::text) FROM inserted)
    """
)
_PENDING = as_psycopg(
    """
    SELECT id, topic, key, headers, value FROM outbox
    WHERE published_at IS NULL AND parked_at IS NULL AND key = ANY(CAST(:keys AS text[]))
    ORDER BY id
    """
)


def headers_of(stored: dict[str, str]) -> tuple[tuple[str, bytes], ...]:
    """Kafka headers from the outbox's `headers` column."""
    return tuple((k, v.encode()) for k, v in stored.items())


def _step_row(saga_id: str, position: int, step: StepState, now: datetime) -> dict[str, Any]:
    return {
        "saga_id": saga_id,
        "name": step.name,
        "position": position,
        "status": step.status.value,
        "attempt": step.attempt,
        "compensation_attempt": step.compensation_attempt,
        "resolve_attempt": step.resolve_attempt,
        "command_id": step.command_id,
        "retry_base": step.retry_base,
        "compensation_base": step.compensation_base,
        "deadline": step.deadline,
        "next_attempt_at": step.next_attempt_at,
        "result": step.result,
        "error": step.error,
        "updated_at": now,
    }


def _step_state(row: dict[str, Any]) -> StepState:
    return StepState(
        name=row["name"],
        status=StepStatus(row["status"]),
        attempt=row["attempt"],
        compensation_attempt=row["compensation_attempt"],
        resolve_attempt=row["resolve_attempt"],
        command_id=row["command_id"],
        retry_base=row["retry_base"],
        compensation_base=row["compensation_base"],
        deadline=row["deadline"],
        next_attempt_at=row["next_attempt_at"],
        result=row["result"],
        error=row["error"],
    )
