"""The rules every reply of the run is held to, whichever scenario it answered."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable

import jsonschema

from orchestrator import codec, message_schemas, signing
from orchestrator.conformance.examples import Subject
from orchestrator.conformance.probe import Check, Probe, ReplyValidator, failed, passed
from orchestrator.conformance.wire import Received
from orchestrator.saga import messages
from orchestrator.saga.contracts import Contracts
from orchestrator.saga.errors import UndecodableMessageError

_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
Problems = Callable[[Probe, Received], list[str]]


def decodes(value: bytes) -> list[str]:
    """The codec's reading of a reply: what the orchestrator's worker accepts."""
    try:
        codec.decode(value)
    except UndecodableMessageError as exc:
        return [exc.message]
    return []


def validator(subject: Subject) -> ReplyValidator:
    """A reply checked by the codec, then against the JSON Schema of its type and version
    (`orchestrator.message_schemas`)."""
    contracts = message_schemas.message_contracts([subject.definition], Contracts())
    schemas = {
        c.name: jsonschema.Draft202012Validator(
            c.schema(), format_checker=jsonschema.FormatChecker()
        )
        for c in contracts
        if c.kind is messages.Kind.REPLY
    }

    def validate(value: bytes) -> list[str]:
        problems = decodes(value)
        if problems:
            return problems
        data = json.loads(value)
        name = f"{data['messageType']}.v{data['version']}"
        schema = schemas.get(name)
        if schema is None:
            return [f"{name} is not a reply {subject.participant} publishes (see contracts/)"]
        return [f"{name}: {e.message} at {e.json_path}" for e in schema.iter_errors(data)]

    return validate


def every_reply(probe: Probe) -> list[Check]:
    checks = {
        "reply-envelope-well-formed": _envelope_problems,
        "reply-signed-by-participant": _signature_problems,
        "reply-outcome-well-formed": _outcome_problems,
    }
    if not probe.wire.replies:
        return [failed(r, "no reply came at all") for r in ["one-reply-per-delivery", *checks]]
    return [
        _one_per_delivery(probe),
        *(_first_problem(probe, rule, problems) for rule, problems in checks.items()),
    ]


def _one_per_delivery(probe: Probe) -> Check:
    counted = Counter(r.message.causation_id for r in probe.wire.replies if r.message is not None)
    for command_id, (command, deliveries) in probe.sent.items():
        if counted[command_id] > deliveries:
            return failed(
                "one-reply-per-delivery",
                f"{counted[command_id]} replies to {command.message_type} {command_id}, "
                f"delivered {deliveries} time(s)",
            )
    return passed("one-reply-per-delivery", f"{len(probe.wire.replies)} replies")


def _first_problem(probe: Probe, rule: str, problems: Problems) -> Check:
    for received in probe.wire.replies:
        found = problems(probe, received)
        if found:
            return failed(rule, found[0])
    return passed(rule, f"all {len(probe.wire.replies)} replies")


def _envelope_problems(probe: Probe, received: Received) -> list[str]:
    reply = received.message
    if reply is None:
        return [f"a reply does not decode: {received.problem}"]
    sent = probe.sent.get(reply.causation_id or "")
    if sent is None:
        return [f"reply {reply.message_id} answers no command sent (causationId "
                f"{reply.causation_id})"]  # fmt: skip
    command = sent[0]
    expected = {
        "kind": (reply.kind, messages.Kind.REPLY),
        "messageType": (reply.message_type, command.message_type + messages.REPLY_SUFFIX),
        "sagaId": (reply.saga_id, command.saga_id),
        "sagaType": (reply.saga_type, command.saga_type),
        "step": (reply.step, command.step),
        "attempt": (reply.attempt, command.attempt),
        "source": (reply.source, probe.participant),
        "key": (received.key, command.saga_id),
    }
    problems = [
        f"reply to {command.message_type}: {name} is {got!r}, not {want!r}"
        for name, (got, want) in expected.items()
        if got != want
    ]
    return problems + [f"reply {reply.message_id}: {p}" for p in probe.validate(received.value)]


def _signature_problems(probe: Probe, received: Received) -> list[str]:
    try:
        probe.keys.check(received.value, received.headers, [probe.participant])
    except signing.UnauthenticatedMessageError as exc:
        return [f"a reply of {received.key}: {exc.message}"]
    return []


def _outcome_problems(probe: Probe, received: Received) -> list[str]:
    reply = received.message
    if reply is None:
        return []  # reported as not well formed
    error = reply.payload.get("error")
    if reply.outcome is messages.Outcome.SUCCESS:
        return [] if error is None else [f"a success carries an error: {error}"]
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not isinstance(code, str) or not _CODE.match(code) or not isinstance(message, str):
        return [
            f"a {reply.outcome.value} reply's error must be {{code: a word, message: text}}, "
            f"not {error!r}"
        ]
    return []
