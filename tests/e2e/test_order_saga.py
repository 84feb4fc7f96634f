"""The order saga end to end: api, worker and participants as processes on real services."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.orders import DECLINED_CARD, journey, new_sku, order, stock
from tests.e2e.system import System, wait_for

pytestmark = pytest.mark.e2e


def test_order_completes_with_stock_taken_one_charge_and_one_shipment(system: System) -> None:
    sku = new_sku(system, 10)

    saga = system.wait_final(system.start_saga(order(sku, quantity=3), version=1))

    assert saga["status"] == "completed", saga
    assert stock(system, sku) == 7
    assert [s["status"] for s in saga["steps"]] == ["succeeded"] * 3
    assert (
        system.scalar(
            "SELECT count(*) FROM payment.charge WHERE saga_id = %s AND status = 'captured'",
            saga["id"],
        )
        == 1
    )
    assert (
        system.scalar(
            "SELECT count(*) FROM shipping.shipment WHERE saga_id = %s AND status = 'created'",
            saga["id"],
        )
        == 1
    )
    assert {"reservationId", "chargeId", "shipmentId"} <= saga["context"].keys()


def test_declined_payment_releases_the_reservation(system: System) -> None:
    sku = new_sku(system, 10)

    saga = system.wait_final(system.start_saga(order(sku, card=DECLINED_CARD), version=1))

    assert saga["status"] == "compensated", saga
    assert stock(system, sku) == 10
    assert system.scalar("SELECT count(*) FROM payment.charge WHERE saga_id = %s", saga["id"]) == 0
    assert (
        system.scalar("SELECT count(*) FROM shipping.shipment WHERE saga_id = %s", saga["id"]) == 0
    )
    assert journey(saga) == [
        ("command_sent", "reserve_inventory"),
        ("command_sent", "charge_payment"),
        ("step_failed", "charge_payment"),
        ("compensation_sent", "reserve_inventory"),
        ("step_compensated", "reserve_inventory"),
    ]
    failure = next(e for e in saga["timeline"] if e["kind"] == "step_failed")
    assert failure["detail"]["code"] == "card_declined"
    assert [s["status"] for s in saga["steps"]] == ["compensated", "failed", "pending"]


def test_failed_shipment_refunds_then_releases(system: System) -> None:
    sku = new_sku(system, 10)

    saga = system.wait_final(system.start_saga(order(sku, country="AQ"), version=1))

    assert saga["status"] == "compensated", saga
    assert journey(saga) == [
        ("command_sent", "reserve_inventory"),
        ("command_sent", "charge_payment"),
        ("command_sent", "create_shipment"),
        ("step_failed", "create_shipment"),
        ("compensation_sent", "charge_payment"),
        ("step_compensated", "charge_payment"),
        ("compensation_sent", "reserve_inventory"),
        ("step_compensated", "reserve_inventory"),
    ]
    assert stock(system, sku) == 10
    assert (
        system.scalar("SELECT status FROM payment.charge WHERE saga_id = %s", saga["id"])
        == "refunded"
    )
    assert (
        system.scalar(
            "SELECT count(*) FROM payment.refund r JOIN payment.charge c ON c.id = r.charge_id "
            "WHERE c.saga_id = %s",
            saga["id"],
        )
        == 1
    )
    assert (
        system.scalar("SELECT count(*) FROM shipping.shipment WHERE saga_id = %s", saga["id"]) == 0
    )


def test_fifty_concurrent_orders_all_finish_and_the_stock_adds_up(system: System) -> None:
    sku = new_sku(system, 1000)
    orders = [
        order(
            sku,
            quantity=1 + i % 3,
            card=DECLINED_CARD if i % 5 == 0 else "4242424242424242",
            country="AQ" if i % 7 == 0 else "DE",
        )
        for i in range(50)
    ]

    with ThreadPoolExecutor(max_workers=10) as pool:
        ids = list(pool.map(lambda o: system.start_saga(o, version=1), orders))
        sagas = list(pool.map(lambda saga_id: system.wait_final(saga_id, 120), ids))

    by_status: dict[str, int] = {}
    for saga in sagas:
        by_status[saga["status"]] = by_status.get(saga["status"], 0) + 1
    expected_completed = sum(1 for i in range(50) if i % 5 != 0 and i % 7 != 0)
    assert by_status == {"completed": expected_completed, "compensated": 50 - expected_completed}
    taken = sum(
        o["items"][0]["quantity"]
        for o, s in zip(orders, sagas, strict=True)
        if s["status"] == "completed"
    )
    assert stock(system, sku) == 1000 - taken
    assert (
        system.scalar(
            "SELECT count(*) FROM payment.charge WHERE status = 'captured' AND saga_id = ANY(%s)",
            ids,
        )
        == expected_completed
    )
    assert (
        system.scalar(
            "SELECT count(*) FROM shipping.shipment "
            "WHERE status = 'created' AND saga_id = ANY(%s)",
            ids,
        )
        == expected_completed
    )
    # published at once; marked by the publisher's next transaction, or 100 ms later
    wait_for(
        lambda: system.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0,
        10,
        "every outbox row to be marked published",
    )


def test_bad_requests_get_clear_errors_and_store_nothing(system: System) -> None:
    before = system.scalar("SELECT count(*) FROM saga")

    unknown_type = system.api.post("/sagas", json={"type": "refund", "input": {}})
    bad_input = system.api.post(
        "/sagas", json={"type": "order", "input": {**order("SKU-RED"), "amount": "-1"}}
    )
    not_json = system.api.post(
        "/sagas", content=b"{nope", headers={"content-type": "application/json"}
    )
    missing = system.api.get(f"/sagas/{uuid.uuid4()}")

    assert unknown_type.status_code == 422
    assert unknown_type.json()["error"]["code"] == "unknown_saga_type"
    assert bad_input.status_code == 422
    assert bad_input.json()["error"]["details"][0]["field"] == "amount"
    assert not_json.status_code == 422
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "saga_not_found"
    assert system.scalar("SELECT count(*) FROM saga") == before


def test_started_saga_is_readable_at_its_location(system: System) -> None:
    response = system.api.post("/sagas", json={"type": "order", "input": order("SKU-RED", 1)})

    assert response.status_code == 202
    assert response.json()["status"] == "running"
    location = response.headers["location"]
    assert location.endswith(f"/sagas/{response.json()['id']}")
    saga = system.api.get(location).json()
    assert saga["type"] == "order"
    assert saga["input"]["orderId"].startswith("o-")
    system.wait_final(saga["id"])
