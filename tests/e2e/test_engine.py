"""The engine on real services: retries, timeouts that survive a crash, parallel groups,
versions, and a second saga type that needed no change outside its own files."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.e2e.orders import journey, new_sku, order, stock
from tests.e2e.system import System

pytestmark = pytest.mark.e2e

FLAKY_CARD = "4000000000000119"


def count(saga: dict[str, Any], kind: str, step: str | None = None) -> int:
    return sum(1 for e in saga["timeline"] if e["kind"] == kind and step in (None, e["step"]))


def captured_charges(system: System, saga_id: str) -> int:
    n: int = system.scalar(
        "SELECT count(*) FROM payment.charge WHERE saga_id = %s AND status = 'captured'", saga_id
    )
    return n


def test_a_retryable_step_succeeds_on_its_third_attempt(system: System) -> None:
    sku = new_sku(system, 10)

    saga = system.wait_final(system.start_saga(order(sku, card=FLAKY_CARD)))

    assert saga["status"] == "completed", saga
    charge = next(s for s in saga["steps"] if s["name"] == "charge_payment")
    assert charge["attempt"] == 3
    assert count(saga, "retry_scheduled", "charge_payment") == 2
    assert captured_charges(system, saga["id"]) == 1
    assert stock(system, sku) == 8


def test_a_stopped_participant_times_out_then_its_step_is_resolved_not_guessed(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    system.stop("shipping")
    try:
        saga_id = system.start_saga(order(sku))
        saga = system.wait_timeline(saga_id, "resolve_unanswered", "create_shipment", 90)
        # nobody knows whether the shipment was created: nothing is compensated meanwhile
        assert saga["status"] == "running"
        assert count(saga, "step_timed_out", "create_shipment") == 3
        assert count(saga, "compensation_sent") == 0
        assert [s["status"] for s in saga["steps"]] == ["succeeded", "succeeded", "resolving"]
    finally:
        system.start("shipping")

    saga = system.wait_final(saga_id, timeout_s=90)

    # back, shipping created the shipment from the first attempt (its commands are read in
    # order), answered the others from its inbox and the resolve from its ledger: applied
    assert saga["status"] == "completed", saga
    assert count(saga, "compensation_sent") == 0
    assert system.scalar(
        "SELECT array_agg(status) FROM shipping.shipment WHERE saga_id = %s", saga_id
    ) == ["created"]
    shipment = next(s for s in saga["steps"] if s["name"] == "create_shipment")
    assert shipment["result"]["shipmentId"] == saga["context"]["shipmentId"]
    assert captured_charges(system, saga_id) == 1
    assert stock(system, sku) == 8


def test_a_deadline_fires_once_after_the_worker_is_killed_and_restarted(system: System) -> None:
    sku = new_sku(system, 10)
    system.stop("shipping")
    try:
        saga_id = system.start_saga(order(sku))
        system.wait_timeline(saga_id, "command_sent", "create_shipment")
        system.kill("worker")
        time.sleep(3)  # the 2 s deadline passes while no worker runs
        system.start("worker")
        saga = system.wait_timeline(saga_id, "step_timed_out", "create_shipment")
    finally:
        system.start("shipping")

    saga = system.wait_final(saga_id, timeout_s=90)

    first_attempt_timeouts = [
        e
        for e in saga["timeline"]
        if e["kind"] == "step_timed_out" and e["detail"]["attempt"] == 1
    ]
    assert len(first_attempt_timeouts) == 1
    assert saga["status"] in ("completed", "compensated"), saga
    expected_stock = 8 if saga["status"] == "completed" else 10
    assert stock(system, sku) == expected_stock


def test_a_failing_parallel_member_compensates_its_sibling_and_the_earlier_steps(
    system: System,
) -> None:
    sku = new_sku(system, 10)

    saga_id = system.start_saga(order(sku, country="AQ"), saga_type="order_parallel")
    saga = system.wait_final(saga_id)

    assert saga["status"] == "compensated", saga
    sent_together = [e for e in journey(saga) if e[0] == "command_sent"][1:]
    assert sent_together == [
        ("command_sent", "charge_payment"),
        ("command_sent", "create_shipment"),
    ]
    compensations = [e[1] for e in journey(saga) if e[0] == "compensation_sent"]
    assert compensations == ["charge_payment", "reserve_inventory"]
    assert captured_charges(system, saga_id) == 0
    assert stock(system, sku) == 10


def test_a_saga_runs_on_the_definition_version_it_started_with(system: System) -> None:
    sku = new_sku(system, 10)

    old = system.wait_final(system.start_saga(order(sku), version=1))
    new = system.wait_final(system.start_saga(order(sku)))

    assert (old["definition_version"], old["status"]) == (1, "completed")
    assert (new["definition_version"], new["status"]) == (2, "completed")
    unknown = system.api.post("/sagas", json={"type": "order", "input": order(sku), "version": 9})
    assert unknown.status_code == 422
    assert "no version 9" in unknown.json()["error"]["message"]


def trip(car_city: str = "Lisbon", nights: int = 3) -> dict[str, Any]:
    return {
        "tripId": f"t-{uuid.uuid4().hex[:8]}",
        "traveller": "Ada",
        "flight": {"from": "BER", "to": "LIS", "date": "2027-05-01"},
        "hotel": {"city": "Lisbon", "checkIn": "2027-05-01", "nights": nights},
        "car": {"city": car_city, "days": 3},
    }


def bookings(system: System, saga_id: str) -> dict[str, str | None]:
    return {
        part: system.scalar(f"SELECT status FROM {part}.booking WHERE saga_id = %s", saga_id)
        for part in ("flight", "hotel", "car")
    }


def test_a_trip_is_booked(system: System) -> None:
    saga = system.wait_final(system.start_saga(trip(), saga_type="trip"))

    assert saga["status"] == "completed", saga
    assert bookings(system, saga["id"]) == {"flight": "booked", "hotel": "booked", "car": "booked"}
    assert {"flightBookingId", "hotelBookingId", "carBookingId"} <= saga["context"].keys()


def test_a_trip_without_a_car_cancels_the_hotel_then_the_flight(system: System) -> None:
    saga = system.wait_final(system.start_saga(trip(car_city="Atlantis"), saga_type="trip"))

    assert saga["status"] == "compensated", saga
    assert [e[1] for e in journey(saga) if e[0] == "compensation_sent"] == [
        "book_hotel",
        "book_flight",
    ]
    assert bookings(system, saga["id"]) == {
        "flight": "cancelled",
        "hotel": "cancelled",
        "car": None,
    }


def test_a_trip_input_is_checked_against_its_schema(system: System) -> None:
    response = system.api.post("/sagas", json={"type": "trip", "input": trip(nights=0)})

    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "hotel.nights"
