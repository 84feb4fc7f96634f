import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.saga.errors import UndecodableMessageError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def command() -> messages.Message:
    return messages.command(
        message_type="inventory.reserve",
        saga_id=messages.new_id(),
        saga_type="order",
        step="reserve_inventory",
        attempt=1,
        payload={"items": []},
        now=NOW,
        causation_id=None,
        trace_id=TRACE,
    )


def test_a_message_survives_the_wire_and_its_reply_keeps_the_trace() -> None:
    sent = command()
    received = codec.decode(codec.encode(sent))
    assert received == sent
    reply = messages.reply_to(
        received, source="inventory", outcome=messages.Outcome.SUCCESS, now=NOW
    )
    assert dict(codec.headers(reply))["traceparent"].decode().startswith(f"00-{TRACE}-")


@pytest.mark.parametrize(
    ("header", "trace_id"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", TRACE),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),
        ("garbage", ""),
        (None, ""),
    ],
)
def test_the_trace_id_is_read_from_a_traceparent_header(header: str | None, trace_id: str) -> None:
    assert codec.trace_id_of(header) == trace_id


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"messageId": "x"}', "lacks"),
        (None, "no value"),
    ],
)
def test_undecodable_messages_say_why(raw: bytes | None, problem: str) -> None:
    with pytest.raises(UndecodableMessageError, match=problem):
        codec.decode(raw)


def test_a_bad_version_or_a_bad_reply_is_refused() -> None:
    wire = codec.to_dict(command())
    with pytest.raises(UndecodableMessageError, match="not a positive integer"):
        codec.decode(codec.json.dumps({**wire, "version": "2"}).encode())
    with pytest.raises(UndecodableMessageError, match=r"payload\.outcome"):
        codec.decode(codec.json.dumps({**wire, "kind": "reply"}).encode())
    with pytest.raises(UndecodableMessageError, match="not a UUID"):
        codec.decode(codec.json.dumps({**wire, "sagaId": "nope"}).encode())
    for part in ("data", "error"):
        payload = {"outcome": "success", part: ["not", "an", "object"]}
        reply = {**wire, "kind": "reply", "payload": payload}
        with pytest.raises(UndecodableMessageError, match=rf"payload\.{part} must be an object"):
            codec.decode(codec.json.dumps(reply).encode())


def wire(**changes: object) -> bytes:
    envelope = codec.to_dict(command())
    envelope.update(changes)
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested too deeply"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (wire().replace(b'"attempt": 1', b'"attempt": 1e999'), "out of range"),
        (wire().replace(b'"attempt": 1', b'"attempt": NaN'), "not JSON"),
        (wire(attempt=1.5), "attempt 1.5 is not a non-negative integer"),
        (wire(attempt=True), "attempt True is not a non-negative integer"),
        (wire(attempt=2**40), "is not a non-negative integer"),
        (wire(step="reserve\u0000"), "NUL character"),
        (wire(payload={"items": ["\u0000"]}), "NUL character"),
        (wire(timestamp=12), "not an RFC 3339 timestamp"),
        (wire(causationId="not-a-uuid"), "causationId 'not-a-uuid' is not a UUID"),
        (wire(messageId=["a list"]), "is not a UUID"),
        (b"\xff\xfe", "not JSON"),
    ],
    ids=lambda v: v[:40] if isinstance(v, bytes) else v,
)
def test_hostile_input_is_undecodable_and_nothing_else(raw: bytes, reason: str) -> None:
    with pytest.raises(UndecodableMessageError, match=re.escape(reason)):
        codec.decode(raw)


def test_an_escaped_backslash_before_u0000_is_no_nul() -> None:
    text = "C:\\u0000 is a folder name"
    assert codec.decode(wire(payload={"path": text})).payload["path"] == text


@pytest.mark.parametrize(
    "spell",
    [str.upper, lambda u: "{" + u + "}", lambda u: "urn:uuid:" + u, lambda u: u.replace("-", "")],
    ids=["upper", "braced", "urn", "unhyphenated"],
)
def test_ids_are_canonical_whatever_their_spelling(spell: Callable[[str], str]) -> None:
    sent = command()
    cause = messages.new_id()
    raw = wire(
        messageId=spell(sent.message_id), sagaId=spell(sent.saga_id), causationId=spell(cause)
    )
    received = codec.decode(raw)
    assert received.message_id == sent.message_id
    assert received.saga_id == sent.saga_id
    assert received.causation_id == cause


def test_a_command_deadline_survives_the_wire_and_a_reply_has_none() -> None:
    sent = dataclasses.replace(command(), deadline=NOW)
    received = codec.decode(codec.encode(sent))
    assert received.deadline == NOW
    reply = messages.reply_to(
        received, source="inventory", outcome=messages.Outcome.SUCCESS, now=NOW
    )
    assert codec.decode(codec.encode(reply)).deadline is None
