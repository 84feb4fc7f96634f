import base64
import json
from pathlib import Path
from typing import Annotated

import pydantic
import pytest

from orchestrator import input_schema, sealed
from orchestrator.saga import messages
from orchestrator.saga.errors import IdempotencyConflictError, InvalidSagaInputError, NotReadyError
from orchestrator.sagas import build_registry
from orchestrator.service import SagaService
from orchestrator.settings import Settings, SettingsError, load_settings
from tests.fakes import FakeDatabase
from tests.unit.test_service import FixedClock, reply_to_last_command, topic_of

CARD = "4111111111111111"
OLD, NEW = bytes(range(32)), bytes(range(1, 33))
RING = sealed.KeyRing({"k1": OLD, "k2": NEW}, {"payment": "k2"})
SAGA = "5f0c6b1e-0000-4000-8000-000000000001"
ORDER = {
    "orderId": "o-1",
    "customerId": "c-1",
    "items": [{"sku": "SKU-1", "quantity": 1}],
    "amount": "10.00",
    "currency": "EUR",
    "card": CARD,
    "shippingAddress": {"country": "DE", "city": "Berlin", "line1": "A 1", "postalCode": "10115"},
}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_a_sealed_field_opens_for_its_saga_and_path_and_shows_the_last_four() -> None:
    box = RING.seal(CARD, "payment", SAGA, "card")

    assert box["enc"] == "k2"
    assert box["mask"] == "************1111"
    assert CARD not in json.dumps(box)
    assert RING.open(box, SAGA, "card") == CARD


def test_each_sealing_differs() -> None:
    assert (
        RING.seal(CARD, "payment", SAGA, "card")["ct"]
        != RING.seal(CARD, "payment", SAGA, "card")["ct"]
    )


def test_a_field_sealed_with_a_rotated_out_key_still_opens() -> None:
    before = sealed.KeyRing({"k1": OLD}, {"payment": "k1"}).seal(CARD, "payment", SAGA, "card")

    assert RING.open(before, SAGA, "card") == CARD


@pytest.mark.parametrize(
    ("saga_id", "path"),
    [("5f0c6b1e-0000-4000-8000-000000000002", "card"), (SAGA, "other")],
    ids=["moved to another saga", "moved to another field"],
)
def test_a_ciphertext_moved_elsewhere_does_not_open(saga_id: str, path: str) -> None:
    box = RING.seal(CARD, "payment", SAGA, "card")

    with pytest.raises(sealed.SealedFieldError):
        RING.open(box, saga_id, path)


def tampered() -> list[object]:
    box = RING.seal(CARD, "payment", SAGA, "card")
    raw = bytearray(base64.b64decode(box["ct"]))
    raw[-1] ^= 1
    return [
        {**box, "ct": base64.b64encode(bytes(raw)).decode()},
        {**box, "enc": "k1"},  # another key of the ring
        {**box, "enc": "k9"},  # a key this process does not hold
        {**box, "ct": "not base64!"},
        {**box, "ct": "AAAA"},  # shorter than a nonce and a tag
        {**box, "extra": "x"},
        {"enc": "k2", "ct": 1, "mask": ""},
        CARD,
        None,
        [box],
    ]


@pytest.mark.parametrize("box", tampered())
def test_anything_but_an_intact_sealed_field_is_refused(box: object) -> None:
    with pytest.raises(sealed.SealedFieldError) as caught:
        RING.open(box, SAGA, "card")

    assert CARD not in caught.value.message


def test_sealing_for_a_reader_without_a_key_is_refused_as_not_ready() -> None:
    with pytest.raises(NotReadyError, match="SAGA_DATA_KEY_IDS"):
        sealed.KeyRing({"k1": OLD}, {}).seal(CARD, "payment", SAGA, "card")


@pytest.mark.parametrize(
    ("value", "shown"),
    [("4242424242424242", "************4242"), ("123456789012", "********9012"), ("1234", "****")],
)
def test_a_mask_shows_only_the_last_four_of_a_long_value(value: str, shown: str) -> None:
    assert sealed.mask(value) == shown


def test_masked_replaces_every_sealed_field_and_keeps_the_rest() -> None:
    box = RING.seal(CARD, "payment", SAGA, "card")
    view = {"input": {"card": box, "n": 1}, "steps": [{"result": box}], "at": None}

    assert sealed.masked(view) == {
        "input": {"card": "************1111", "n": 1},
        "steps": [{"result": "************1111"}],
        "at": None,
    }


@pytest.mark.parametrize(
    ("keys", "ids", "problem"),
    [
        (f"k1:{b64(OLD)}", "payment=k2", "k2 is not in SAGA_DATA_KEYS"),
        (f"k1:{b64(OLD[:16])}", "", "16 bytes, not 32"),
        ("k1:???", "", "not base64"),
        (f"k1:{b64(OLD)},k1:{b64(NEW)}", "", "given twice"),
        (f"k 1:{b64(OLD)}", "", "<key id>:<base64 key>"),
        (f"k1:{b64(OLD)}", "payment", "<participant>=<key id>"),
    ],
)
def test_invalid_keys_are_refused_at_startup_without_echoing_a_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, keys: str, ids: str, problem: str
) -> None:
    monkeypatch.setenv("SAGA_ENV_FILE", str(tmp_path / "none.env"))
    monkeypatch.setenv("SAGA_DATABASE_URL", "postgresql://x")
    monkeypatch.setenv("SAGA_KAFKA_BOOTSTRAP_SERVERS", "k:1")
    monkeypatch.setenv("SAGA_DATA_KEYS", keys)
    monkeypatch.setenv("SAGA_DATA_KEY_IDS", ids)

    with pytest.raises(SettingsError) as caught:
        load_settings()

    assert problem in caught.value.message
    assert b64(OLD) not in caught.value.message
    assert b64(NEW) not in caught.value.message


def settings(
    *, dev_keys: bool = False, insecure_dev: bool = False, data_keys: str = "", ids: str = ""
) -> Settings:
    return Settings(
        database_url="postgresql://x",
        kafka_bootstrap_servers="k:1",
        dev_keys=dev_keys,
        insecure_dev=insecure_dev,
        data_keys=data_keys,
        data_key_ids=ids,
    )


def test_without_keys_only_a_development_setup_seals_with_the_development_key() -> None:
    assert sealed.key_ring(settings()).key_id_for("payment") is None
    assert sealed.key_ring(settings(dev_keys=True)).key_id_for("payment") == sealed.DEV_KEY_ID
    assert sealed.key_ring(settings(insecure_dev=True)).key_id_for("payment") == "dev"
    configured = sealed.key_ring(
        settings(dev_keys=True, data_keys=f"k1:{b64(OLD)}", ids="payment=k1")
    )
    assert configured.key_id_for("payment") == "k1"


def test_the_order_marks_the_card_sensitive_for_payment() -> None:
    definition = build_registry().get("order", None)

    assert input_schema.sensitive_fields(definition.validate_input) == (
        input_schema.SensitiveField("card", "payment"),
    )


def test_only_a_string_field_can_be_sensitive() -> None:
    class Pin(pydantic.BaseModel):
        pin: Annotated[int, input_schema.Sensitive("payment")]

    with pytest.raises(TypeError, match="only a str field"):
        input_schema.validator(Pin, "pin")


def test_a_plain_function_validator_has_no_sensitive_fields() -> None:
    assert input_schema.sensitive_fields(lambda raw: dict(raw)) == ()


@pytest.mark.parametrize("card", [CARD + "x", "4111-1111-1111-1111", CARD * 2])
def test_an_invalid_card_is_refused_without_echoing_it(card: str) -> None:
    validate = build_registry().get("order", None).validate_input

    with pytest.raises(InvalidSagaInputError) as caught:
        validate({**ORDER, "card": card})

    assert caught.value.problems[0]["field"] == "card"
    assert card not in json.dumps([caught.value.message, caught.value.problems])


async def test_a_started_saga_stores_and_sends_the_card_only_sealed_for_payment() -> None:
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), topic_of, keys=RING)

    saga, _ = await service.start_saga("order", ORDER)
    await service.handle_reply(reply_to_last_command(db, messages.Outcome.SUCCESS))

    stored = db.sagas[saga.id].input
    charge = next(p.message for p in db.outbox if p.message.message_type == "payment.charge")
    assert CARD not in repr(db.sagas[saga.id]) + repr(db.outbox)
    assert stored["card"]["mask"] == "************1111"
    assert charge.payload["card"] == stored["card"]
    assert RING.open(charge.payload["card"], charge.saga_id, "card") == CARD
    # the worker, holding another ring (or none), cannot read it
    with pytest.raises(sealed.SealedFieldError):
        sealed.KeyRing({"k2": OLD}).open(charge.payload["card"], charge.saga_id, "card")


async def test_a_repeated_start_with_its_key_finds_the_saga_it_started() -> None:
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), topic_of, keys=RING)

    first, created = await service.start_saga("order", ORDER, idempotency_key="k")
    again, created_again = await service.start_saga("order", ORDER, idempotency_key="k")

    assert (again.id, created, created_again) == (first.id, True, False)
    assert CARD not in repr(db.keys)


async def test_a_start_without_a_key_for_the_reader_stores_nothing() -> None:
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), topic_of, keys=sealed.KeyRing())

    with pytest.raises(NotReadyError):
        await service.start_saga("order", ORDER)

    assert db.sagas == {}
    assert db.outbox == []


async def test_a_repeat_with_another_card_of_the_same_last_four_is_a_different_request() -> None:
    db = FakeDatabase(FixedClock())
    service = SagaService(db, build_registry(), topic_of, keys=RING)
    await service.start_saga("order", ORDER, idempotency_key="k")
    other = {**ORDER, "card": "5555" + CARD[4:]}  # the same mask, another card

    with pytest.raises(IdempotencyConflictError):
        await service.start_saga("order", other, idempotency_key="k")
    assert CARD not in repr(db.keys)
    assert other["card"] not in repr(db.keys)
