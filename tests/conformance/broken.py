"""A car rental participant written by hand, as a team without the kit would: its inbox and
step ledger in memory, on the project's consumer loop. It keeps every rule unless
CONFORMANCE_BREAK names one of `BREAKS`, which it then breaks:

- `duplicate`: a redelivered command is applied again and answered with a new reply;
- `tombstone`: a compensation of an action never seen leaves no tombstone, so the action
  arriving after it is applied;
- `version`: a payload version it does not know is applied as if it were version 1;
- `expired`: a compensation past its deadline is applied;
- `unsigned`: its replies go unsigned.

    CONFORMANCE_BREAK=tombstone python -m tests.conformance.broken   # with the SAGA_* settings
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from orchestrator import codec, logs, signing
from orchestrator.saga import messages
from orchestrator.saga.contracts import UnknownMessageVersionError
from orchestrator.saga.errors import OrchestratorError
from orchestrator.settings import Settings, load_settings
from orchestrator.signing import Sign
from orchestrator.transport import consumer, topics
from orchestrator.transport.loop import consuming
from orchestrator.transport.producer import Publisher, Record
from orchestrator.transport.security import kafka_security

NAME = "car"
BOOK, CANCEL, RESOLVE = f"{NAME}.book", f"{NAME}.cancel", f"{NAME}.resolve"
BREAKS = ("duplicate", "tombstone", "version", "expired", "unsigned")
Answer = tuple[messages.Outcome, Mapping[str, Any], str | None]  # outcome, data, error code
_SUCCESS, _FAILURE = messages.Outcome.SUCCESS, messages.Outcome.FAILURE


class UnhandledCommandError(OrchestratorError):
    """This participant has no handler for the command."""


class Car:
    def __init__(self, broken: str, publisher: Publisher, replies: str, sign: Sign | None):
        self.broken = broken
        self.inbox: dict[str, bytes] = {}  # command id -> the reply given
        self.ledger: dict[tuple[str, str], tuple[str, Mapping[str, Any]]] = {}
        self._publisher = publisher
        self._replies = replies
        self._sign = sign

    async def handle_many(self, commands: list[messages.Message]) -> None:
        records = []
        for command in commands:
            value = self.reply(command)
            headers = [("messageType", f"{command.message_type}.reply".encode())]
            if self._sign is not None:
                headers.append(self._sign(value))
            records.append(Record(self._replies, command.saga_id, value, headers))
        await self._publisher.publish(records)

    def reply(self, command: messages.Message) -> bytes:
        if command.message_type not in (BOOK, CANCEL, RESOLVE):
            raise UnhandledCommandError(f"{NAME} does not handle {command.message_type!r}")
        if command.version != 1 and self.broken != "version":
            raise UnknownMessageVersionError(f"{command.message_type} v{command.version}")
        stored = self.inbox.get(command.message_id)
        if stored is not None and self.broken != "duplicate":
            return stored
        outcome, data, code = self.apply(command)
        reply = messages.reply_to(
            command,
            source=NAME,
            outcome=outcome,
            now=datetime.now(UTC),
            data=data,
            error_code=code,
            error_message=code or "",
        )
        self.inbox[command.message_id] = value = codec.encode(reply)
        return value

    def apply(self, command: messages.Message) -> Answer:
        key = (command.saga_id, command.step)
        state, data = self.ledger.get(key, (None, {}))
        if command.message_type == BOOK:
            return self.book(command, state, data)
        if command.message_type == RESOLVE:
            if state == "applied":
                return _SUCCESS, {"resolution": "applied", "result": dict(data)}, None
            if state is None:
                self.ledger[key] = ("tombstone", {})
            return _SUCCESS, {"resolution": "fenced", "compensated": state == "compensated"}, None
        if state is None:
            if self.broken != "tombstone":
                self.ledger[key] = ("tombstone", {})
            return _SUCCESS, {"empty": True}, None
        if state != "applied":
            return _SUCCESS, {}, None
        expired = command.deadline is not None and datetime.now(UTC) > command.deadline
        if expired and self.broken != "expired":
            return messages.Outcome.RETRYABLE, {}, "expired"
        self.ledger[key] = ("compensated", {})
        return _SUCCESS, {}, None

    def book(
        self, command: messages.Message, state: str | None, data: Mapping[str, Any]
    ) -> Answer:
        if state in ("tombstone", "compensated"):
            return _FAILURE, {}, "fenced"
        if state == "applied" and self.broken != "duplicate":
            return _SUCCESS, data, None
        if not isinstance(command.payload.get("city"), str):
            return _FAILURE, {}, "no_city"
        booked = {"carBookingId": str(uuid.uuid4())}
        self.ledger[(command.saga_id, command.step)] = ("applied", booked)
        return _SUCCESS, booked, None


async def serve(settings: Settings, broken: str) -> None:
    await topics.ensure_topics(settings, [NAME])
    keys = signing.message_keys(settings)
    publisher = Publisher(
        settings.kafka_bootstrap_servers, f"broken-{NAME}", security=kafka_security(settings)
    )
    sign = None if broken == "unsigned" else keys.signer(NAME)
    car = Car(broken, publisher, settings.topic("replies"), sign)
    verify = signing.commands_for(keys, NAME)
    apply = consumer.applying(car.handle_many, publisher, verify=verify)
    running = asyncio.ensure_future(consuming(settings, f"participant-{NAME}", NAME, apply).run())
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, running.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await publisher.stop()


def main() -> None:
    broken = os.environ.get("CONFORMANCE_BREAK", "")
    if broken and broken not in BREAKS:
        raise SystemExit(f"CONFORMANCE_BREAK must be one of {', '.join(BREAKS)}")
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(serve(settings, broken))


if __name__ == "__main__":
    main()
