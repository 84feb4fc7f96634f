"""Old and new versions of a command live side by side; an unknown one is dead-lettered."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from orchestrator import codec
from orchestrator.saga import messages
from tests.e2e.kafka import dead, first, publish
from tests.e2e.orders import new_sku, order
from tests.e2e.system import System, orchestrator_key_for, wait_for

pytestmark = pytest.mark.e2e


def descriptor(system: System, saga_id: str) -> str | None:
    value: str | None = system.scalar(
        "SELECT statement_descriptor FROM payment.charge WHERE saga_id = %s", saga_id
    )
    return value


def test_a_v1_command_is_upcast_and_a_v2_command_is_read_by_a_v1_reader(system: System) -> None:
    sku = new_sku(system, 10)

    old = system.wait_final(system.start_saga(order(sku), version=1))  # sends v1 commands
    new = system.wait_final(system.start_saga(order(sku)))  # v2 of charge and shipment

    assert (old["status"], new["status"]) == ("completed", "completed")
    assert descriptor(system, old["id"]) == "SAGA SHOP"  # payment reads v2: default filled in
    assert descriptor(system, new["id"]) == "TEST SHOP"
    sent = codec.decode(first(system, f"{system.namespace}.shipping.commands", new["id"]))
    assert (sent.version, sent.payload["giftWrap"]) == (2, True)  # shipping reads v1 only
    assert (
        system.scalar("SELECT count(*) FROM shipping.shipment WHERE saga_id = %s", new["id"]) == 1
    )


def test_an_unknown_future_version_is_dead_lettered_not_half_applied(system: System) -> None:
    sku = new_sku(system, 10)
    saga_id = system.wait_final(system.start_saga(order(sku), version=1))["id"]
    template = codec.decode(first(system, f"{system.namespace}.payment.commands", saga_id))
    future_saga = str(uuid.uuid4())
    future = dataclasses.replace(
        template, message_id=messages.new_id(), saga_id=future_saga, version=7
    )
    wire = {**codec.to_dict(future), "payload": {**future.payload, "holographic": True}}

    publish(
        system,
        f"{system.namespace}.payment.commands",
        [(future_saga.encode(), json.dumps(wire).encode())],
        signed_by=orchestrator_key_for("payment"),
    )
    letter = wait_for(
        lambda: next(
            (
                d
                for d in dead(system, f"{system.namespace}.payment.commands")
                if d.key == future_saga
            ),
            None,
        ),
        60,
        "the v7 command to be dead-lettered",
    )

    assert "payment.charge version 7 is unknown" in letter.reason
    assert descriptor(system, future_saga) is None
    assert system.scalar("SELECT count(*) FROM payment.inbox WHERE saga_id = %s", future_saga) == 0
