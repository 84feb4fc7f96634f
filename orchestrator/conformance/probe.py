"""The rules, their results, and the probe that sends a subject's commands as the
orchestrator does and finds what came back for each."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from orchestrator import codec, sealed, signing
from orchestrator.conformance.examples import Subject
from orchestrator.conformance.wire import Received, Wire
from orchestrator.saga import messages

# The rules in the order they are reported, each with what it asks of a participant.
RULES: Mapping[str, str] = {
    "valid-action-replied": "a valid action gets a reply",
    "one-reply-per-delivery": "a command gets one reply per delivery, never more",
    "reply-envelope-well-formed": "a reply decodes, names its command, saga, step, attempt "
    "and participant, is keyed by the saga id and matches its schema",
    "reply-signed-by-participant": "a reply is signed with a key of the participant",
    "reply-outcome-well-formed": "success carries no error; failure and retryable carry "
    "error.code and error.message",
    "duplicate-answered-from-store": "a command delivered twice gets the same stored reply",
    "compensation-after-action-succeeds": "the compensation of an applied action succeeds",
    "repeated-compensation-answered-from-store": "a compensation delivered twice gets the "
    "same stored reply",
    "empty-compensation-succeeds": "a compensation of an action never seen succeeds",
    "tombstone-refuses-late-action": "an action arriving after its compensation is refused",
    "resolve-reports-applied": "a resolve of an applied action answers `applied` with its result",
    "resolve-fences-action": "a resolve of an action never seen answers `fenced`, and the "
    "action is refused afterwards",
    "expired-compensation-not-applied": "a compensation past its deadline is not applied",
    "unknown-version-refused": "a payload version the participant does not know is "
    "dead-lettered or refused",
    "invalid-payload-not-applied": "an action with an empty payload is not applied",
    "garbage-dead-lettered": "bytes that are not JSON go to <topic>.dlq, unanswered",
    "non-object-dead-lettered": "JSON that is not an object goes to <topic>.dlq, unanswered",
    "incomplete-envelope-dead-lettered": "an envelope without messageType goes to "
    "<topic>.dlq, unanswered",
    "unsigned-command-dead-lettered": "an unsigned command goes to <topic>.dlq, unanswered",
    "works-after-poison": "a valid command after the poison on its partition is answered",
}


class Status(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"  # the rule does not apply to the step (it has no compensation)


@dataclasses.dataclass(frozen=True)
class Check:
    rule: str
    status: Status
    detail: str = ""


def passed(rule: str, detail: str = "") -> Check:
    return Check(rule, Status.PASS, detail)


def failed(rule: str, detail: str) -> Check:
    return Check(rule, Status.FAIL, detail)


# Problems of a reply's value against the published contracts; none when it is valid.
ReplyValidator = Callable[[bytes], list[str]]


@dataclasses.dataclass
class Probe:
    subject: Subject
    wire: Wire
    keys: signing.MessageKeys
    ring: sealed.KeyRing
    timeout_s: float
    settle_s: float
    validate: ReplyValidator
    sent: dict[str, tuple[messages.Message, int]] = dataclasses.field(default_factory=dict)

    @property
    def participant(self) -> str:
        return self.subject.participant

    def action(self, saga_id: str, **changes: Any) -> messages.Message:
        """The step's action on a saga, as the orchestrator sends it, with `changes`."""
        if "payload" not in changes:
            changes["payload"] = self.subject.action_payload(saga_id, self.ring)
        return self._command(saga_id, self.subject.action, **changes)

    def compensation(
        self, saga_id: str, context: Mapping[str, Any], **changes: Any
    ) -> messages.Message:
        assert self.subject.compensation is not None, "only for a step with a compensation"
        payload = self.subject.compensation_payload(saga_id, self.ring, context)
        deadline = self.subject.step.compensation_timeout_s
        return self._command(
            saga_id, self.subject.compensation, payload=payload, timeout_s=deadline, **changes
        )

    def resolve(self, saga_id: str) -> messages.Message:
        payload = {"command": self.subject.action, "attempt": 1}
        return self._command(saga_id, self.subject.resolve, payload=payload)

    def _command(
        self,
        saga_id: str,
        message_type: str,
        *,
        payload: Mapping[str, Any],
        attempt: int = 1,
        timeout_s: float | None = None,
        **changes: Any,
    ) -> messages.Message:
        now = datetime.now(UTC)
        step = self.subject.step
        command = messages.command(
            message_type=message_type,
            saga_id=saga_id,
            saga_type=self.subject.definition.name,
            step=step.name,
            attempt=attempt,
            payload=payload,
            now=now,
            causation_id=None,
            deadline=now + timedelta(seconds=timeout_s or step.timeout_s),
        )
        if message_type == step.command and step.command_version != 1:
            command = dataclasses.replace(command, version=step.command_version)
        return dataclasses.replace(command, **changes)

    async def send(
        self, command: messages.Message, value: bytes | None = None, signed: bool = True
    ) -> bytes:
        """Publish the command (or `value` in its place), signed as the orchestrator signs
        its commands to this participant; the bytes sent."""
        value = codec.encode(command) if value is None else value
        earlier = self.sent.get(command.message_id)
        self.sent[command.message_id] = (command, earlier[1] + 1 if earlier else 1)
        headers = codec.headers(command)
        if signed:
            headers.append(self.keys.sign(value, signing.ORCHESTRATOR, self.participant))
        await self.wire.send(command.saga_id, value, headers)
        return value

    async def send_raw(self, saga_id: str, value: bytes) -> None:
        """Bytes that are no command, signed all the same: refused for what they hold."""
        headers = [self.keys.sign(value, signing.ORCHESTRATOR, self.participant)]
        await self.wire.send(saga_id, value, headers)

    def answers(self, command: messages.Message) -> list[Received]:
        return [
            r
            for r in self.wire.replies
            if r.message is not None and r.message.causation_id == command.message_id
        ]

    async def answer(self, command: messages.Message, count: int = 1) -> list[Received]:
        """The first `count` replies to the command, or fewer when the time ran out."""
        await self.wire.wait(lambda: len(self.answers(command)) >= count, self.timeout_s)
        return self.answers(command)[:count]

    def dead_letter(self, value: bytes) -> Received | None:
        return next((d for d in self.wire.dead if d.value == value), None)

    async def dead_lettered(self, *values: bytes) -> list[Received | None]:
        await self.wire.wait(
            lambda: all(self.dead_letter(v) is not None for v in values), self.timeout_s
        )
        return [self.dead_letter(v) for v in values]


def outcome_of(received: Received) -> str:
    """A reply in a few words, for a detail column."""
    m = received.message
    if m is None:
        return f"an undecodable reply ({received.problem})"
    if m.outcome is messages.Outcome.SUCCESS:
        return f"success {dict(m.data)}" if m.data else "success"
    return f"{m.outcome.value} {m.error.get('code')!s}: {m.error.get('message')!s}"
