"""Test a participant's handlers with the kit's own rules, on PostgreSQL, without Kafka.

Every command goes through the same processor the worker runs (inbox, step ledger,
tombstones, resolves, stored results, `retryable` for a handler that raises), inside one
transaction that is rolled back when the test ends: nothing is left behind, and tests do
not see each other's rows. The participant's tables must exist in the test database
(`participants migrate NAME`, or `participants.kit.migrate.upgrade` in a session fixture)::

    @pytest.fixture
    async def payments(database_url):
        async with ParticipantTester.rolled_back(make_participant(settings), database_url) as t:
            yield t

    async def test_a_charge_found_applied_is_refunded_with_its_stored_id(payments):
        charged = await payments.action("payment.charge", {...}, step="charge_payment")
        assert charged.outcome is Outcome.SUCCESS
        resolved = await payments.resolve(charged)
        assert resolved.data == {"resolution": "applied", "result": charged.data}
        refunded = await payments.compensation("payment.refund", {}, of=charged)
        assert refunded.outcome is Outcome.SUCCESS
        rows = await payments.conn.execute(sa.select(refund))  # the participant's own table
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.transport.producer import Record
from participants.kit.participant import CommandProcessor, Participant

Outcome = messages.Outcome


class ParticipantTester:
    """Sends commands to one participant and returns its replies; `conn` sees its tables."""

    def __init__(self, participant: Participant, conn: AsyncConnection) -> None:
        self.participant = participant
        self.conn = conn
        self.replies: list[messages.Message] = []
        self._processor = CommandProcessor(participant, _Savepoints(conn), self, "replies")

    @classmethod
    @asynccontextmanager
    async def rolled_back(
        cls, participant: Participant, database: str | AsyncEngine
    ) -> AsyncIterator[ParticipantTester]:
        """A tester whose every write is rolled back when the block ends."""
        engine = (
            create_async_engine(_async_url(database), pool_size=1)
            if isinstance(database, str)
            else database
        )
        try:
            async with engine.connect() as conn:
                outer = await conn.begin()
                try:
                    yield cls(participant, conn)
                finally:
                    await outer.rollback()
        finally:
            if isinstance(database, str):
                await engine.dispose()

    async def action(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        step: str = "step",
        attempt: int = 1,
        deadline_s: float | None = 30.0,
    ) -> messages.Message:
        """Send an action, as the orchestrator would for the step's attempt."""
        return await self.send(
            self.command(
                command_type,
                payload,
                saga_id=saga_id,
                step=step,
                attempt=attempt,
                deadline_s=deadline_s,
            )
        )

    async def compensation(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        *,
        of: messages.Message | None = None,
        saga_id: str | None = None,
        step: str = "step",
        deadline_s: float | None = 30.0,
    ) -> messages.Message:
        """Send a compensation of the step `of` (an action or its reply) names, or of
        `saga_id` and `step`."""
        saga_id, step = (of.saga_id, of.step) if of is not None else (saga_id, step)
        return await self.send(
            self.command(command_type, payload, saga_id=saga_id, step=step, deadline_s=deadline_s)
        )

    async def resolve(
        self, of: messages.Message | None = None, *, saga_id: str | None = None, step: str = "step"
    ) -> messages.Message:
        """Ask what became of the step's action, as the orchestrator does when it does not
        know: `data["resolution"]` is "applied" (with `data["result"]`) or "fenced"."""
        saga_id, step = (of.saga_id, of.step) if of is not None else (saga_id, step)
        return await self.send(
            self.command(self.participant.resolve_command, {}, saga_id=saga_id, step=step)
        )

    def command(
        self,
        command_type: str,
        payload: Mapping[str, Any],
        *,
        saga_id: str | None = None,
        step: str = "step",
        attempt: int = 1,
        deadline_s: float | None = 30.0,
    ) -> messages.Message:
        now = datetime.now(UTC)
        return messages.command(
            message_type=command_type,
            saga_id=saga_id or messages.new_id(),
            saga_type="test",
            step=step,
            attempt=attempt,
            payload=dict(payload),
            now=now,
            causation_id=None,
            deadline=now + timedelta(seconds=deadline_s) if deadline_s is not None else None,
        )

    async def send(self, command: messages.Message) -> messages.Message:
        """Deliver one command (again, to test a redelivery) and return its reply."""
        before = len(self.replies)
        await self._processor.process(command)
        [reply] = self.replies[before:]
        return reply

    async def publish(self, records: Sequence[Record]) -> None:
        self.replies += [codec.decode(r.value) for r in records]


@dataclasses.dataclass
class _Savepoints:
    """Each of the processor's transactions is a savepoint of the tester's transaction."""

    conn: AsyncConnection

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self.conn.begin_nested():
            yield self.conn


def _async_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)
