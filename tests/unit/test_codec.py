from datetime import UTC, datetime

import pytest

from orchestrator.saga import messages
from orchestrator.saga.errors import UndecodableMessageError
from orchestrator.transport import codec

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
