"""Signed envelopes: who may sign what, and what a verifier refuses."""

import base64
import dataclasses
import hashlib
from datetime import UTC, datetime

import pytest

from orchestrator import signing
from orchestrator.saga import messages
from orchestrator.settings import Settings
from orchestrator.signing import MessageKeys, UnauthenticatedMessageError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SAGA_ID = "00000000-0000-4000-8000-000000000001"


def secret(name: str) -> str:
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


ALL = signing.parse_keys(
    f"o1=orchestrator:{secret('o1')},"
    f"op1=orchestrator>payment:{secret('op1')},"
    f"p1=payment:{secret('p1')},"
    f"i1=inventory:{secret('i1')}"
)


def ring(*key_ids: str, require: bool = True) -> MessageKeys:
    return MessageKeys({k: ALL[k] for k in key_ids}, require=require)


def command(to: str = "payment", source: str = "orchestrator") -> messages.Message:
    charge = messages.command(
        message_type=f"{to}.charge",
        saga_id=SAGA_ID,
        saga_type="order",
        step="charge_payment",
        attempt=1,
        payload={"amount": "1.00"},
        now=NOW,
        causation_id=None,
    )
    return dataclasses.replace(charge, source=source)


def reply(source: str = "payment") -> messages.Message:
    return messages.reply_to(command(), source=source, outcome=messages.Outcome.SUCCESS, now=NOW)


VALUE = b'{"messageId":"..."}'


def test_the_orchestrator_signs_a_participants_commands_with_the_key_scoped_to_it() -> None:
    orchestrator = ring("o1", "op1", "p1", "i1")
    assert orchestrator.signing_key("orchestrator", "payment") == ALL["op1"]
    assert orchestrator.signing_key("orchestrator", "inventory") == ALL["o1"]
    assert orchestrator.signing_key("orchestrator") == ALL["o1"]
    _, header = orchestrator.sign(VALUE, "orchestrator", "payment")
    assert header.decode().startswith("op1:")
    payment = ring("op1", "p1")  # its own key and the orchestrator's for it: nothing else
    signing.commands_for(payment, "payment")(VALUE, [("signature", header)], command())


def test_a_participant_cannot_sign_a_command_another_participant_takes() -> None:
    payment = ring("op1", "p1")
    inventory = signing.commands_for(ring("o1", "i1"), "inventory")
    for owner in ("payment", "orchestrator"):  # payment holds no key of the orchestrator's own
        if payment.signing_key(owner) is None:
            continue
        header = [payment.sign(VALUE, owner)]
        with pytest.raises(UnauthenticatedMessageError):
            inventory(VALUE, header, command("inventory"))
    scoped_to_payment = [payment.sign(VALUE, "orchestrator", "payment")]
    with pytest.raises(UnauthenticatedMessageError, match="this process does not hold"):
        inventory(VALUE, scoped_to_payment, command("inventory"))


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([], "not signed"),
        ([("signature", b"p1")], "not <key id>:<64 hex digits"),
        ([("signature", b"p1:" + b"z" * 64)], "not hexadecimal"),
        ([("signature", b"nope:" + b"0" * 64)], "key nope, which this process does not hold"),
        ([("signature", b"i1:" + b"0" * 64)], "a key of inventory; it must come from payment"),
        ([("signature", b"p1:" + b"0" * 64)], "does not match the message: forged or altered"),
        ([("signature", b"p1:" + b"0" * 64)] * 2, "more than one signature"),
    ],
)
def test_a_reply_not_signed_by_its_participant_is_refused_saying_why(
    headers: list[tuple[str, bytes]], reason: str
) -> None:
    worker = signing.replies(ring("o1", "op1", "p1", "i1"))
    with pytest.raises(UnauthenticatedMessageError, match=reason) as refused:
        worker(VALUE, headers, reply())
    assert secret("p1") not in str(refused.value)


def test_an_altered_value_fails_its_signature() -> None:
    keys = ring("o1", "op1", "p1", "i1")
    header = [keys.sign(VALUE, "payment")]
    signing.replies(keys)(VALUE, header, reply())
    with pytest.raises(UnauthenticatedMessageError, match="forged or altered"):
        signing.replies(keys)(VALUE.replace(b"...", b"..!"), header, reply())


def test_replies_claiming_the_orchestrator_and_commands_from_anyone_else_are_refused() -> None:
    keys = ring("o1", "op1", "p1", "i1")
    with pytest.raises(UnauthenticatedMessageError, match="cannot come from 'orchestrator'"):
        signing.replies(keys)(VALUE, [keys.sign(VALUE, "orchestrator")], reply("orchestrator"))
    forged = command(source="inventory")
    with pytest.raises(UnauthenticatedMessageError, match="takes commands only from"):
        signing.commands_for(keys, "payment")(VALUE, [keys.sign(VALUE, "inventory")], forged)


def test_unsigned_messages_pass_only_when_signatures_are_not_required() -> None:
    lenient = ring("p1", require=False)
    signing.replies(lenient)(VALUE, [], reply())
    with pytest.raises(UnauthenticatedMessageError, match="forged or altered"):
        signing.replies(lenient)(VALUE, [("signature", b"p1:" + b"0" * 64)], reply())


def test_keys_rotate_the_first_listed_signs_and_the_older_still_verifies() -> None:
    old, new = f"p1=payment:{secret('p1')}", f"p2=payment:{secret('p2')}"
    before = MessageKeys(signing.parse_keys(old))
    during = MessageKeys(signing.parse_keys(f"{new},{old}"))
    assert during.sign(VALUE, "payment")[1].startswith(b"p2:")
    signing.replies(during)(VALUE, [before.sign(VALUE, "payment")], reply())


def test_development_keys_differ_per_sender() -> None:
    dev = MessageKeys(development=True)
    signing.commands_for(dev, "payment")(VALUE, [dev.sign(VALUE, "orchestrator")], command())
    with pytest.raises(UnauthenticatedMessageError, match="forged or altered"):
        signing.commands_for(dev, "payment")(VALUE, [dev.sign(VALUE, "inventory")], command())


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("o1:orchestrator:" + secret("x"), "<key id>=<owner>:<base64 key>"),
        ("o1=a>b>c:" + secret("x"), "<key id>=<owner>:<base64 key>"),
        ("dev=orchestrator:" + secret("x"), "kept for the development keys"),
        ("o1=orchestrator:not base64!", "not base64"),
        ("o1=orchestrator:" + base64.b64encode(b"short").decode(), "5 bytes, not 32"),
        (f"o1=orchestrator:{secret('a')},o1=payment:{secret('b')}", "given twice"),
    ],
)
def test_malformed_keys_are_refused_without_showing_them(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as refused:
        signing.parse_keys(text)
    assert secret("x") not in str(refused.value)


def settings(**kw: object) -> Settings:
    return Settings(database_url="postgresql://x", kafka_bootstrap_servers="k:1", **kw)  # type: ignore[arg-type]


def test_development_keys_only_when_asked_for_and_never_next_to_real_ones() -> None:
    assert not signing.message_keys(settings()).development
    assert signing.message_keys(settings(dev_keys=True)).development
    assert signing.message_keys(settings(insecure_dev=True)).development
    keys = signing.message_keys(
        settings(dev_keys=True, signing_keys=f"o1=orchestrator:{secret('o1')}")
    )
    assert not keys.development
    assert keys.signing_key("payment") is None
    with pytest.raises(signing.NoSigningKeyError, match="no key to sign as payment"):
        keys.sign(VALUE, "payment")
