"""Signed envelopes on the real services: forged and replayed replies do not advance a saga,
and participants act only on commands the orchestrator signed for them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from orchestrator import codec
from orchestrator.saga import messages
from tests.e2e.kafka import dead, publish
from tests.e2e.orders import new_sku, order, stock
from tests.e2e.system import System, orchestrator_key_for, wait_for

pytestmark = pytest.mark.e2e

FORGED_CHARGE = "ch-forged"


def charge_commands(system: System, saga_id: str) -> list[messages.Message]:
    """The payment.charge commands the orchestrator sent for the saga, by attempt."""
    rows = system.scalar(
        "SELECT array_agg(value ORDER BY id) FROM outbox WHERE key = %s AND topic = %s",
        saga_id,
        f"{system.namespace}.payment.commands",
    )
    sent = [codec.decode(bytes(v)) for v in rows or []]
    return [c for c in sent if c.message_type == "payment.charge"]


def success(command: messages.Message, source: str = "payment") -> bytes:
    reply = messages.reply_to(
        command,
        source=source,
        outcome=messages.Outcome.SUCCESS,
        now=datetime.now(UTC),
        data={"chargeId": FORGED_CHARGE},
    )
    return codec.encode(reply)


def letters_for(system: System, topic: str, values: list[bytes]) -> dict[bytes, str]:
    return {d.value: d.reason for d in dead(system, topic) if d.value in values}


def charge_step(saga: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in saga["steps"] if s["name"] == "charge_payment")


def test_forged_and_replayed_replies_do_not_advance_a_saga(system: System) -> None:
    replies = f"{system.namespace}.replies"
    sku = new_sku(system, 10)
    system.stop("payment")
    try:
        saga_id = system.start_saga(order(sku))
        # payment is away: the first charge times out and a second attempt is sent
        wait_for(lambda: len(charge_commands(system, saga_id)) >= 2, 30, "a second charge")
        first, current = charge_commands(system, saga_id)[:2]

        # a late answer to the first attempt, really signed by payment: replayed or late,
        # it answers a command the step no longer waits for
        replayed = success(first)
        unsigned = success(current)
        # the replies of a compromised inventory: as payment, then as itself
        as_payment = success(current)
        as_inventory = success(current, source="inventory")
        unknown_key = success(current)
        key = saga_id.encode()
        publish(system, replies, [(key, replayed)], signed_by="payment")
        publish(system, replies, [(key, unsigned)])
        publish(system, replies, [(key, as_payment), (key, as_inventory)], signed_by="inventory")
        publish(system, replies, [(key, unknown_key)], signed_by="an-attacker")
        sent = [replayed, unsigned, as_payment, as_inventory, unknown_key]

        letters = wait_for(
            lambda: (found := letters_for(system, replies, sent)) and len(found) == 5 and found,
            60,
            "the five replies to be dead-lettered",
            interval_s=0.5,
        )
        assert "late or replayed" in letters[replayed]
        assert letters[unsigned] == "unauthenticated: the message is not signed"
        assert "signed with a key of inventory; it must come from payment" in letters[as_payment]
        assert "step charge_payment belongs to payment" in letters[as_inventory]
        assert "which this process does not hold" in letters[unknown_key]

        saga = system.saga(saga_id)
        assert saga["status"] == "running"
        assert charge_step(saga)["status"] in ("sent", "retry_wait", "resolving")
        assert "chargeId" not in saga["context"]
        received = [e for e in saga["timeline"] if e["kind"] == "reply_received"]
        assert [e["step"] for e in received] == ["reserve_inventory"]
        # the authentic two are noted on the saga; the unauthenticated ones touch nothing
        noted = {e["message_id"] for e in saga["timeline"] if e["kind"] == "message_dead_lettered"}
        assert noted == {codec.decode(replayed).message_id, codec.decode(as_inventory).message_id}
    finally:
        system.start("payment")

    saga = system.wait_final(saga_id, timeout_s=90)
    assert saga["status"] == "completed", saga
    charged = system.scalar("SELECT id::text FROM payment.charge WHERE saga_id = %s", saga_id)
    assert saga["context"]["chargeId"] == charged != FORGED_CHARGE
    assert stock(system, sku) == 8


def test_a_participant_acts_only_on_commands_the_orchestrator_signed_for_it(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    topic = f"{system.namespace}.inventory.commands"
    commands = []
    for _ in range(4):
        reserve = messages.command(
            message_type="inventory.reserve",
            saga_id=messages.new_id(),
            saga_type="order",
            step="reserve_inventory",
            attempt=1,
            payload={"orderId": "o-forged", "items": [{"sku": sku, "quantity": 4}]},
            now=datetime.now(UTC),
            causation_id=None,
        )
        commands.append(codec.encode(reserve))
    unsigned, by_payment, scoped_to_payment, signed = commands
    records = [
        (unsigned, None),
        # payment's own key, and the orchestrator's key for payment: neither is inventory's
        (by_payment, "payment"),
        (scoped_to_payment, orchestrator_key_for("payment")),
        (signed, orchestrator_key_for("inventory")),
    ]
    for value, signer in records:
        publish(system, topic, [(codec.decode(value).saga_id.encode(), value)], signed_by=signer)

    refused = [unsigned, by_payment, scoped_to_payment]
    letters = wait_for(
        lambda: (found := letters_for(system, topic, refused)) and len(found) == 3 and found,
        60,
        "the three commands to be dead-lettered",
        interval_s=0.5,
    )
    assert letters[unsigned] == "unauthenticated: the message is not signed"
    # inventory holds neither key: its own and the orchestrator's for it are all it has
    assert "key t-payment, which this process does not hold" in letters[by_payment]
    assert "which this process does not hold" in letters[scoped_to_payment]
    wait_for(lambda: stock(system, sku) == 6, 30, "the signed command to reserve")
    reserved = system.scalar(
        "SELECT array_agg(saga_id::text) FROM inventory.inbox WHERE saga_id = ANY(%s::uuid[])",
        [codec.decode(v).saga_id for v in commands],
    )
    assert reserved == [codec.decode(signed).saga_id]
