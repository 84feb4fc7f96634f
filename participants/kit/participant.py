"""A participant: handlers for its commands, applied once each, answered with a reply.

The anomalies are handled here, not in every handler:
- a repeated command gets the stored reply and is not applied again (inbox);
- a compensation of a step that never ran succeeds and leaves a tombstone (empty compensation);
- an action arriving after its own compensation is refused because of the tombstone (hanging);
- `<name>.resolve`, sent when the orchestrator does not know whether an action took effect,
  is answered from the step ledger: `applied` with the action's stored result, or `fenced`,
  after leaving a tombstone so that the action can never apply afterwards;
- a compensation handler gets the result its action stored, whether or not the orchestrator
  ever saw the action's reply.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
import structlog
from prometheus_client import Counter
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator import codec, faults, tracing
from orchestrator.saga import messages
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.errors import OrchestratorError
from orchestrator.signing import Sign
from orchestrator.store.errors import store_error, translated
from orchestrator.store.saga_store import as_psycopg
from orchestrator.transport.producer import Publisher, Record

log = structlog.get_logger(__name__)

COMMANDS_APPLIED = Counter(
    "saga_participant_commands_total",
    "Commands a participant applied (or fenced, or resolved), by outcome",
    ["participant", "command", "outcome"],
)
COMMANDS_REPEATED = Counter(
    "saga_participant_repeats_total",
    "Repeated commands answered from the inbox without applying them again",
    ["participant", "command"],
)


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    outcome: messages.Outcome
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    error_code: str | None = None
    error_message: str | None = None


def succeeded(**data: Any) -> Result:
    return Result(messages.Outcome.SUCCESS, data)


def refused(code: str, message: str) -> Result:
    return Result(messages.Outcome.FAILURE, error_code=code, error_message=message)


def retryable(code: str, message: str) -> Result:
    """Not now: the orchestrator sends the command again as the step's retry policy says."""
    return Result(messages.Outcome.RETRYABLE, error_code=code, error_message=message)


Handler = Callable[[AsyncConnection, messages.Message], Awaitable[Result]]
# A compensation also gets what its action stored in the ledger (the action's result data).
CompensationHandler = Callable[
    [AsyncConnection, messages.Message, Mapping[str, Any]], Awaitable[Result]
]
# The rows besides its own saga step that a command's handler will lock, named (for example
# "stock:SKU-1"); it may read the participant's tables to know them (a compensation, what its
# action touched).
Locks = Callable[[AsyncConnection, messages.Message], Awaitable[Iterable[str]]]
APPLIED, FENCED = "applied", "fenced"


class UnknownCommandError(OrchestratorError):
    """The participant has no handler for this command."""


@dataclasses.dataclass(frozen=True)
class Participant:
    name: str
    inbox: sa.Table
    ledger: sa.Table
    actions: Mapping[str, Handler]
    compensations: Mapping[str, CompensationHandler]
    contracts: Contracts = dataclasses.field(default_factory=Contracts)
    reads: Mapping[str, int] = dataclasses.field(default_factory=dict)  # type -> version known
    # The participant's own Alembic scripts (`participants migrate NAME` applies them).
    migrations: Path | None = None
    # Partitions are applied side by side, each batch in one transaction: when handlers of
    # different sagas lock shared rows (a product's stock), name them here, and the kit takes
    # every batch's locks in one global order before any handler runs, so that batches wait
    # for each other instead of deadlocking (which costs the database a second to detect).
    locks: Locks | None = None

    def __post_init__(self) -> None:
        if self.resolve_command in self.actions or self.resolve_command in self.compensations:
            raise ValueError(
                f"participant {self.name!r}: {self.resolve_command!r} is the kit's own command"
            )
        both = sorted(set(self.actions) & set(self.compensations))
        if both:
            raise ValueError(
                f"participant {self.name!r}: {both} are both actions and compensations"
            )

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding the participant's tables, its inbox and ledger."""
        return self.inbox.schema or "public"

    @property
    def resolve_command(self) -> str:
        return f"{self.name}.resolve"

    def handles(self, command_type: str) -> bool:
        return (
            command_type in self.actions
            or command_type in self.compensations
            or command_type == self.resolve_command
        )


@dataclasses.dataclass
class _Batch:
    """What one transaction knows while it applies a batch of commands in order."""

    answered: dict[str, bytes]  # message id -> stored reply
    ledger: dict[tuple[str, str], tuple[str, Any]]  # (saga id, step) -> (state, data)
    new_inbox: list[tuple[str, str, str, str, bytes]] = dataclasses.field(default_factory=list)
    new_ledger: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    decided: dict[str, Result] = dataclasses.field(default_factory=dict)  # not to run again
    optimistic: bool = True  # no savepoints: a refusal undoes the whole transaction
    isolate: bool = False  # each handler in a savepoint

    def set_state(self, command: messages.Message, state: str, data: Any) -> None:
        key = (command.saga_id, command.step)
        self.ledger[key] = (state, data)
        self.new_ledger[key] = {
            "saga_id": command.saga_id,
            "step": command.step,
            "state": state,
            "data": data,
        }


class Transactions(Protocol):
    """Where the processor runs its transactions: an AsyncEngine, or the test kit's
    savepoints inside one transaction that is rolled back."""

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]: ...


class Replies(Protocol):
    async def publish(self, records: Sequence[Record]) -> None: ...


class CommandProcessor:
    def __init__(
        self,
        participant: Participant,
        engine: AsyncEngine | Transactions,
        publisher: Publisher | Replies,
        replies: str,
        sign: Sign | None = None,
    ) -> None:
        """`sign` gives a reply's signature header; without it replies go unsigned, which
        an orchestrator that requires signatures dead-letters."""
        self._p = participant
        self._engine = engine
        self._publisher = publisher
        self._replies = replies
        self._sign = sign
        inbox, ledger = participant.inbox, participant.ledger
        # Built once: the statements every batch runs, with bound parameters. The advisory
        # lock comes first, in a statement of its own: what the reads see is taken after it.
        self._lock_steps = as_psycopg(
            "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) "
            "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n) ORDER BY n"
        )
        # in the order of the locks themselves: two names of one hash are one lock
        self._lock_rows = as_psycopg(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtextextended(k, 0) AS h "
            "FROM unnest(CAST(:keys AS text[])) AS t(k)) AS l ORDER BY h"
        )
        inbox_name = f"{inbox.schema}.{inbox.name}" if inbox.schema else inbox.name
        ledger_name = f"{ledger.schema}.{ledger.name}" if ledger.schema else ledger.name
        # the stored replies of these commands and the ledger of their sagas, in one read
        self._find = as_psycopg(
            f"SELECT 'reply' AS kind, message_id::text AS id, NULL AS step, NULL AS state, "
            f"NULL::jsonb AS data, reply FROM {inbox_name} "
            "WHERE message_id = ANY(CAST(:ids AS uuid[])) "
            "UNION ALL "
            f"SELECT 'state', saga_id::text, step, state, data, NULL FROM {ledger_name} "
            "WHERE saga_id = ANY(CAST(:sagas AS uuid[]))"
        )
        self._purge = as_psycopg(
            f"DELETE FROM {inbox_name} WHERE ctid = ANY(ARRAY("
            f"SELECT ctid FROM {inbox_name} "
            "WHERE received_at < now() - make_interval(secs => :older_than) "
            "LIMIT :limit FOR UPDATE SKIP LOCKED))"
        )
        # the ledger's new states and the inbox's new replies, in one write
        self._store = as_psycopg(
            f"""
            WITH states AS (
                INSERT INTO {ledger_name} (saga_id, step, state, data)
                SELECT * FROM unnest(CAST(:l_saga AS uuid[]), CAST(:l_step AS text[]),
                                     CAST(:l_state AS text[]), CAST(:l_data AS jsonb[]))
                ON CONFLICT (saga_id, step) DO UPDATE
                SET state = EXCLUDED.state, data = EXCLUDED.data, updated_at = now()
            )
            INSERT INTO {inbox_name} (message_id, saga_id, step, command_type, reply)
            SELECT * FROM unnest(CAST(:i_id AS uuid[]), CAST(:i_saga AS uuid[]),
                                 CAST(:i_step AS text[]), CAST(:i_type AS text[]),
                                 CAST(:i_reply AS bytea[]))
            """
        )

    async def purge_inbox(self, older_than_s: float, limit: int) -> int:
        """Forget up to `limit` stored replies older than `older_than_s`; how many. A command
        repeated after its reply is forgotten is still answered from the ledger."""
        with translated():
            async with self._engine.begin() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                params = {"older_than": older_than_s, "limit": limit}
                removed: int = (await raw.execute(self._purge, params)).rowcount
                return removed

    async def process(self, command: messages.Message) -> None:
        await self.process_many([command])

    async def process_many(self, commands: Sequence[messages.Message]) -> None:
        """Apply each command once, in order and in one transaction, commit, then publish
        the (possibly stored) replies. Any error rolls back all of them."""
        for command in commands:
            if command.kind is not messages.Kind.COMMAND or not self._p.handles(
                command.message_type
            ):
                raise UnknownCommandError(
                    f"{self._p.name} does not handle {command.kind.value} {command.message_type!r}"
                )
        commands = [self._p.contracts.read(c, self._p.reads.get(c.message_type)) for c in commands]
        started = time.time_ns() if tracing.enabled else 0
        batch = _Batch({}, {})
        try:
            replies = await self._replies_in_transaction(commands, batch)
        except _Undo as undo:  # a command not applied: again, its reply known, with savepoints
            decided = {undo.command.message_id: undo.result}
            batch = _Batch({}, {}, decided=decided, optimistic=False)
            replies = await self._replies_in_transaction(commands, batch)
        committed = time.time_ns() if tracing.enabled else 0
        await self._publisher.publish(
            [Record(self._replies, reply.saga_id, stored, self._headers(reply, stored))
             for reply, stored in replies]
        )  # fmt: skip
        if tracing.enabled:
            tracing.commands_handled(
                self._p.name,
                [(command, reply) for command, (reply, _) in zip(commands, replies, strict=True)],
                {row[0] for row in batch.new_inbox},  # the others were answered from the inbox
                (started, committed, time.time_ns()),
            )

    def _headers(self, reply: messages.Message, value: bytes) -> list[tuple[str, bytes]]:
        headers = codec.headers(reply)
        if self._sign is not None:
            headers.append(self._sign(value))
        return headers

    async def _replies_in_transaction(
        self, commands: Sequence[messages.Message], batch: _Batch
    ) -> list[tuple[messages.Message, bytes]]:
        """The replies, once their transaction committed; the driver's errors as StoreError."""
        with translated():
            async with self._engine.begin() as conn:
                return await self._replies_to(conn, commands, batch)

    async def _replies_to(
        self, conn: AsyncConnection, commands: Sequence[messages.Message], batch: _Batch
    ) -> list[tuple[messages.Message, bytes]]:
        """Each command's reply: the stored one for a repeat, else the one applying it gave."""
        # One transaction at a time per saga step, even if two instances hold a partition for
        # a moment during a rebalance: the second waits, then finds the inbox rows.
        keys = sorted({f"{self._p.name}:{c.saga_id}:{c.step}" for c in commands})
        raw = (await conn.get_raw_connection()).driver_connection  # the same transaction
        assert raw is not None
        await raw.execute(self._lock_steps, {"keys": keys})
        found = await raw.execute(
            self._find,
            {
                "ids": [c.message_id for c in commands],
                "sagas": sorted({c.saga_id for c in commands}),
            },
        )
        for kind, key, step, state, data, reply in await found.fetchall():
            if kind == "reply":
                batch.answered[key] = bytes(reply)
            else:
                batch.ledger[(key, step)] = (state, data)
        if self._p.locks is not None:
            unanswered = [c for c in commands if c.message_id not in batch.answered]
            await self._lock_shared_rows(conn, raw, unanswered)
        batch.isolate = len(commands) > 1 and not batch.optimistic
        replies = []
        for command in commands:
            stored = batch.answered.get(command.message_id)
            if stored is not None:
                COMMANDS_REPEATED.labels(self._p.name, command.message_type).inc()
                log.info("duplicate_command_answered_from_inbox", message_id=command.message_id)
                replies.append((codec.decode(stored), stored))
                continue
            reply = await self._apply(conn, batch, command)
            stored = codec.encode(reply)
            batch.answered[command.message_id] = stored
            batch.new_inbox.append(
                (command.message_id, command.saga_id, command.step, command.message_type, stored)
            )
            replies.append((reply, stored))
        if batch.new_inbox:
            states = list(batch.new_ledger.values())
            inbox = batch.new_inbox
            await raw.execute(
                self._store,
                {
                    "l_saga": [r["saga_id"] for r in states],
                    "l_step": [r["step"] for r in states],
                    "l_state": [r["state"] for r in states],
                    "l_data": [Jsonb(r["data"]) for r in states],
                    "i_id": [r[0] for r in inbox],
                    "i_saga": [r[1] for r in inbox],
                    "i_step": [r[2] for r in inbox],
                    "i_type": [r[3] for r in inbox],
                    "i_reply": [r[4] for r in inbox],
                },
            )
        return replies

    async def _lock_shared_rows(
        self, conn: AsyncConnection, raw: Any, commands: Sequence[messages.Message]
    ) -> None:
        assert self._p.locks is not None
        names: set[str] = set()
        for command in commands:
            names.update(await self._p.locks(conn, command))
        if names:
            keys = [f"{self._p.name}:rows:{name}" for name in names]
            await raw.execute(self._lock_rows, {"keys": keys})

    async def _apply(
        self, conn: AsyncConnection, batch: _Batch, command: messages.Message
    ) -> messages.Message:
        state, data = batch.ledger.get((command.saga_id, command.step), (None, None))
        if command.message_type in self._p.actions:
            result = await self._apply_action(conn, batch, command, state, data)
        elif command.message_type == self._p.resolve_command:
            result = _resolve(batch, command, state, data)
        else:
            result = await self._apply_compensation(conn, batch, command, state, data)
        COMMANDS_APPLIED.labels(self._p.name, command.message_type, result.outcome.value).inc()
        log.debug(
            "command_applied",
            participant=self._p.name,
            command=command.message_type,
            outcome=result.outcome.value,
            error=result.error_code,
        )
        return messages.reply_to(
            command,
            source=self._p.name,
            outcome=result.outcome,
            now=datetime.now(UTC),
            data=result.data,
            error_code=result.error_code,
            error_message=result.error_message,
        )

    async def _apply_action(
        self,
        conn: AsyncConnection,
        batch: _Batch,
        command: messages.Message,
        state: str | None,
        data: Any,
    ) -> Result:
        if state == "tombstone":
            return refused("fenced", "the step was fenced or compensated first; not applied")
        if state == "compensated":
            return refused("compensated", "the step was already compensated; not applied")
        if state == "applied":
            return succeeded(**(data or {}))
        action = self._p.actions[command.message_type]
        result = await self._run_handler(conn, batch, lambda c, m: action(c, m), command)
        if result.outcome is messages.Outcome.SUCCESS:
            batch.set_state(command, "applied", dict(result.data))
        return result

    async def _apply_compensation(
        self,
        conn: AsyncConnection,
        batch: _Batch,
        command: messages.Message,
        state: str | None,
        data: Any,
    ) -> Result:
        if state is None:
            batch.set_state(command, "tombstone", None)
            return succeeded(empty=True)
        if state != "applied":
            return succeeded()
        if _expired(command):
            return _EXPIRED
        compensation = self._p.compensations[command.message_type]
        applied: Mapping[str, Any] = dict(data or {})
        result = await self._run_handler(
            conn, batch, lambda c, m: compensation(c, m, applied), command
        )
        if result.outcome is messages.Outcome.SUCCESS:
            batch.set_state(command, "compensated", None)
        return result

    async def _run_handler(
        self, conn: AsyncConnection, batch: _Batch, handler: Handler, command: messages.Message
    ) -> Result:
        """Run a handler so that what a refused or failed command wrote is undone. First
        without savepoints (most commands succeed): a refusal rolls back the whole
        transaction (`_Undo`), and the batch runs again with that command's reply known (its
        handler does not run again) and each other handler in a savepoint.

        A handler that raises gets a `retryable` reply naming the error, so the saga's retry
        policy applies at once instead of waiting out the step's deadline; a transient
        fault (the database gone, a deadlock) is raised, and the whole batch retried.
        """
        decided = batch.decided.get(command.message_id)
        if decided is not None:
            return decided
        try:
            if not batch.isolate:
                result = await handler(conn, command)
            else:
                async with conn.begin_nested() as savepoint:
                    result = await handler(conn, command)
                    if result.outcome is not messages.Outcome.SUCCESS:
                        await savepoint.rollback()
        except Exception as exc:
            if _database_away(exc):
                raise
            log.error(
                "handler_failed",
                participant=self._p.name,
                command=command.message_type,
                error=faults.describe(exc),
                exc_info=exc,
            )
            result = retryable("handler_failed", faults.describe(exc))
        if batch.optimistic and result.outcome is not messages.Outcome.SUCCESS:
            raise _Undo(command, result)
        return result


def _resolve(batch: _Batch, command: messages.Message, state: str | None, data: Any) -> Result:
    """What became of the step's action: applied (its stored result) or fenced for good."""
    if state == "applied":
        return succeeded(resolution=APPLIED, result=dict(data or {}))
    if state is None:
        batch.set_state(command, "tombstone", None)
    return succeeded(resolution=FENCED, compensated=state == "compensated")


class _Undo(Exception):
    """A lone command's handler refused or failed: its transaction is rolled back."""

    def __init__(self, command: messages.Message, result: Result) -> None:
        self.command = command
        self.result = result


def _database_away(exc: Exception) -> bool:
    """The transaction itself is lost (connection, deadlock, failover): retry the batch.
    Any other error, a time-out calling another service included, is the handler's."""
    error = store_error(exc)
    return error is not None and error.fault is faults.Fault.TRANSIENT


_EXPIRED = retryable("expired", "the command arrived after its deadline; not applied")


def _expired(command: messages.Message) -> bool:
    """A compensation past its deadline is not applied: the orchestrator has moved on to a
    new attempt, or an operator has skipped it and undone the effect by hand, and applying
    it then would undo twice. (An action that arrives late is still applied: the orchestrator
    takes a late success, and its compensation, always after it on the partition, undoes it.)
    """
    return command.deadline is not None and datetime.now(UTC) > command.deadline
