"""A participant: handlers for its commands, applied once each, answered with a reply.

The three anomalies are handled here, not in every handler:
- a repeated command gets the stored reply and is not applied again (inbox);
- a compensation of a step that never ran succeeds and leaves a tombstone (empty compensation);
- an action arriving after its own compensation is refused because of the tombstone (hanging).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from orchestrator.saga import messages
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.errors import OrchestratorError
from orchestrator.transport import codec
from orchestrator.transport.producer import Publisher, Record

log = structlog.get_logger(__name__)


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


Handler = Callable[[AsyncConnection, messages.Message], Awaitable[Result]]


class UnknownCommandError(OrchestratorError):
    """The participant has no handler for this command."""


@dataclasses.dataclass(frozen=True)
class Participant:
    name: str
    inbox: sa.Table
    ledger: sa.Table
    actions: Mapping[str, Handler]
    compensations: Mapping[str, Handler]
    contracts: Contracts = dataclasses.field(default_factory=Contracts)
    reads: Mapping[str, int] = dataclasses.field(default_factory=dict)  # type -> version known

    def handles(self, command_type: str) -> bool:
        return command_type in self.actions or command_type in self.compensations


class CommandProcessor:
    def __init__(
        self, participant: Participant, engine: AsyncEngine, publisher: Publisher, replies: str
    ) -> None:
        self._p = participant
        self._engine = engine
        self._publisher = publisher
        self._replies = replies

    async def process(self, command: messages.Message) -> None:
        """Apply the command once, commit, then publish the (possibly stored) reply."""
        if command.kind is not messages.Kind.COMMAND or not self._p.handles(command.message_type):
            raise UnknownCommandError(
                f"{self._p.name} does not handle {command.kind.value} {command.message_type!r}"
            )
        command = self._p.contracts.read(command, self._p.reads.get(command.message_type))
        async with self._engine.begin() as conn:
            # One command of a saga step at a time, even if two instances hold the partition
            # for a moment during a rebalance: the second waits, then finds the inbox row.
            await conn.execute(
                sa.select(
                    sa.func.pg_advisory_xact_lock(
                        sa.func.hashtextextended(
                            f"{self._p.name}:{command.saga_id}:{command.step}", 0
                        )
                    )
                )
            )
            stored = await conn.scalar(
                sa.select(self._p.inbox.c.reply).where(
                    self._p.inbox.c.message_id == command.message_id
                )
            )
            if stored is None:
                reply = await self._apply(conn, command)
                stored = codec.encode(reply)
                await conn.execute(
                    self._p.inbox.insert().values(
                        message_id=command.message_id,
                        saga_id=command.saga_id,
                        step=command.step,
                        command_type=command.message_type,
                        reply=stored,
                    )
                )
            else:
                log.info("duplicate_command_answered_from_inbox")
        reply_message = codec.decode(stored)
        await self._publisher.publish(
            [Record(self._replies, command.saga_id, stored, codec.headers(reply_message))]
        )

    async def _apply(self, conn: AsyncConnection, command: messages.Message) -> messages.Message:
        ledger = self._p.ledger
        state_row = (
            await conn.execute(
                sa.select(ledger.c.state, ledger.c.data)
                .where(ledger.c.saga_id == command.saga_id, ledger.c.step == command.step)
                .with_for_update()
            )
        ).first()
        state = state_row.state if state_row else None
        if command.message_type in self._p.actions:
            result = await self._apply_action(conn, command, state, state_row)
        else:
            result = await self._apply_compensation(conn, command, state)
        log.info(
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
        self, conn: AsyncConnection, command: messages.Message, state: str | None, row: Any
    ) -> Result:
        if state in ("tombstone", "compensated"):
            return refused("compensated", "the step was already compensated; not applied")
        if state == "applied":
            return succeeded(**(row.data or {}))
        handler = self._p.actions[command.message_type]
        async with conn.begin_nested() as savepoint:
            result = await handler(conn, command)
            if result.outcome is not messages.Outcome.SUCCESS:
                await savepoint.rollback()
                return result
        await self._set_state(conn, command, "applied", dict(result.data))
        return result

    async def _apply_compensation(
        self, conn: AsyncConnection, command: messages.Message, state: str | None
    ) -> Result:
        if state is None:
            await self._set_state(conn, command, "tombstone", None)
            return succeeded(empty=True)
        if state != "applied":
            return succeeded()
        handler = self._p.compensations[command.message_type]
        async with conn.begin_nested() as savepoint:
            result = await handler(conn, command)
            if result.outcome is not messages.Outcome.SUCCESS:
                await savepoint.rollback()
                return result
        await self._set_state(conn, command, "compensated", None)
        return result

    async def _set_state(
        self, conn: AsyncConnection, command: messages.Message, state: str, data: Any
    ) -> None:
        stmt = insert(self._p.ledger).values(
            saga_id=command.saga_id, step=command.step, state=state, data=data
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["saga_id", "step"],
                set_={"state": state, "data": data, "updated_at": sa.func.now()},
            )
        )
