"""The conformance kit's judgement of replies, its payloads and its report, without Kafka
(tests/e2e/test_conformance.py runs it against participants)."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from orchestrator import codec, conformance, sagas, sealed, signing
from orchestrator.conformance import envelope, examples
from orchestrator.conformance.probe import Check, Probe, Status
from orchestrator.conformance.wire import Received, Wire
from orchestrator.saga import messages
from orchestrator.saga.errors import UndecodableMessageError

README = Path(__file__).resolve().parents[2] / "README.md"
KEYS = signing.MessageKeys(development=True)


def probe(participant: str = "car") -> Probe:
    subject = examples.subject(sagas.build_registry(), participant)
    wire = Wire("127.0.0.1:9", f"saga.{participant}.commands", "saga.replies", {})
    return Probe(subject, wire, KEYS, sealed.KeyRing(), 1.0, 0.0, envelope.decodes)


def sent(p: Probe) -> messages.Message:
    command = p.action(messages.new_id())
    p.sent[command.message_id] = (command, 1)
    return command


def reply(command: messages.Message, **changes: Any) -> messages.Message:
    answered = messages.reply_to(
        command,
        source="car",
        outcome=messages.Outcome.SUCCESS,
        now=datetime.now(UTC),
        data={"carBookingId": "b-1"},
    )
    return dataclasses.replace(answered, **changes)


def received(value: bytes, key: str, signed_by: str | None = "car") -> Received:
    headers = [KEYS.sign(value, signed_by)] if signed_by else []
    try:
        return Received(key, value, headers, codec.decode(value))
    except UndecodableMessageError as exc:  # what the wire records of it
        return Received(key, value, headers, None, exc.message)


def failures(p: Probe) -> dict[str, str]:
    return {c.rule: c.detail for c in envelope.every_reply(p) if c.status is Status.FAIL}


def test_a_well_formed_signed_reply_keeps_every_envelope_rule() -> None:
    p = probe()
    command = sent(p)
    p.wire.replies.append(received(codec.encode(reply(command)), command.saga_id))

    assert failures(p) == {}


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"source": "cab"}, "source is 'cab', not 'car'"),
        ({"step": "book_hotel"}, "step is 'book_hotel', not 'book_car'"),
        ({"attempt": 2}, "attempt is 2, not 1"),
        ({"message_type": "car.book"}, "messageType is 'car.book', not 'car.book.reply'"),
        ({"causation_id": messages.new_id()}, "answers no command sent"),
    ],
)
def test_a_reply_that_does_not_answer_its_command_exactly_is_not_well_formed(
    changes: dict[str, Any], named: str
) -> None:
    p = probe()
    command = sent(p)
    p.wire.replies.append(received(codec.encode(reply(command, **changes)), command.saga_id))

    assert named in failures(p)["reply-envelope-well-formed"]


def test_a_reply_keyed_by_anything_but_its_saga_id_is_not_well_formed() -> None:
    p = probe()
    command = sent(p)
    p.wire.replies.append(received(codec.encode(reply(command)), "another-key"))

    assert "key is 'another-key'" in failures(p)["reply-envelope-well-formed"]


def test_an_undecodable_reply_is_reported_not_raised() -> None:
    p = probe()
    sent(p)
    p.wire.replies.append(received(b"\xff{not json", "k"))

    assert "does not decode" in failures(p)["reply-envelope-well-formed"]


def test_an_unsigned_reply_or_one_signed_by_another_sender_is_refused() -> None:
    p = probe()
    command = sent(p)
    value = codec.encode(reply(command))
    p.wire.replies += [received(value, command.saga_id, None)]
    assert "not signed" in failures(p)["reply-signed-by-participant"]

    p.wire.replies[:] = [received(value, command.saga_id, "hotel")]
    assert "does not match" in failures(p)["reply-signed-by-participant"]


@pytest.mark.parametrize(
    "error", [None, {"code": "", "message": "no"}, {"code": "two words", "message": "no"}]
)
def test_a_refusal_without_a_one_word_code_is_not_well_formed(error: Any) -> None:
    p = probe()
    command = sent(p)
    body = codec.to_dict(reply(command))
    body["payload"] = {"outcome": "failure", **({"error": error} if error else {})}
    p.wire.replies.append(received(json.dumps(body).encode(), command.saga_id))

    assert "error must be" in failures(p)["reply-outcome-well-formed"]


def test_more_replies_than_deliveries_break_the_one_reply_rule() -> None:
    p = probe()
    command = sent(p)
    p.wire.replies += [
        received(codec.encode(reply(command)), command.saga_id),
        received(codec.encode(reply(command)), command.saga_id),
    ]

    assert "2 replies to car.book" in failures(p)["one-reply-per-delivery"]


def test_no_reply_at_all_fails_the_rules_about_replies() -> None:
    assert set(failures(probe())) == {
        "one-reply-per-delivery",
        "reply-envelope-well-formed",
        "reply-signed-by-participant",
        "reply-outcome-well-formed",
    }


def test_every_shipped_participant_has_a_step_and_an_example_input() -> None:
    registry = sagas.build_registry()
    found = {name: examples.subject(registry, name).action for name in registry.participants()}

    assert found == {
        "car": "car.book",
        "flight": "flight.book",
        "hotel": "hotel.book",
        "inventory": "inventory.reserve",
        "payment": "payment.charge",
        "shipping": "shipping.create",
    }


def test_a_sensitive_field_is_sealed_for_its_reader_when_a_data_key_is_at_hand() -> None:
    subject = examples.subject(sagas.build_registry(), "payment")
    saga_id = messages.new_id()

    clear = subject.action_payload(saga_id, sealed.KeyRing())
    ring = sealed.KeyRing.development()
    sealed_card = subject.action_payload(saga_id, ring)["card"]

    assert clear["card"] == "4242424242424242"
    assert ring.open(sealed_card, saga_id, "card") == "4242424242424242"


def test_a_participant_no_saga_names_is_refused_with_what_to_give() -> None:
    with pytest.raises(examples.NoSubjectError, match="--input"):
        examples.subject(sagas.build_registry(), "nobody")


def test_the_report_exits_1_only_when_a_rule_failed() -> None:
    kept = [Check("valid-action-replied", Status.PASS), Check("works-after-poison", Status.SKIP)]
    console = Console(file=io.StringIO(), width=120)

    assert conformance.report(kept, console) == 0
    assert conformance.report([*kept, Check("x", Status.FAIL, "[red]{'a': [1]}")], console) == 1


def test_the_readme_lists_every_rule() -> None:
    text = README.read_text()

    assert [rule for rule in conformance.RULES if f"| `{rule}` |" not in text] == []
