"""What an operator does through the api: find sagas, page through them, act on them."""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.orders import DECLINED_CARD, new_sku, order, stock, wait_shipping_caught_up
from tests.e2e.system import VIEWER_TOKEN, System, wait_for

pytestmark = pytest.mark.e2e


def captured(system: System, saga_id: str) -> int:
    n: int = system.scalar(
        "SELECT count(*) FROM payment.charge WHERE saga_id = %s AND status = 'captured'", saga_id
    )
    return n


def listed(system: System, **params: Any) -> list[str]:
    response = system.api.get("/sagas", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return [s["id"] for s in response.json()["items"]]


def test_filters_select_by_status_type_and_time(system: System) -> None:
    sku = new_sku(system, 10)
    before = datetime.now(UTC)
    done = system.wait_final(system.start_saga(order(sku), version=1))["id"]
    undone = system.wait_final(system.start_saga(order(sku, card=DECLINED_CARD), version=1))["id"]
    after = datetime.now(UTC)

    assert done in listed(system, status="completed")
    assert undone not in listed(system, status="completed")
    both = listed(system, status=["completed", "compensated"], created_after=before.isoformat())
    assert {done, undone} <= set(both)
    assert done not in listed(system, type="trip")
    assert done not in listed(system, created_before=before.isoformat())
    assert done not in listed(system, created_after=after.isoformat())
    assert done in listed(system, updated_before=after.isoformat(), type="order")
    assert done not in listed(system, stuck_for="1s")  # final sagas are never stuck
    bad = system.api.get("/sagas", params={"stuck_for": "ten minutes"})
    assert bad.status_code == 422
    assert "invalid duration" in bad.json()["error"]["message"]
    assert system.api.get("/sagas", params={"cursor": "garbage"}).status_code == 422


def test_pages_have_no_duplicates_or_gaps_while_sagas_are_started(system: System) -> None:
    sku = new_sku(system, 1000)
    start = datetime.now(UTC).isoformat()
    existing = {system.start_saga(order(sku, 1), version=1) for _ in range(12)}
    stop = threading.Event()

    def keep_starting() -> None:
        while not stop.is_set():
            system.start_saga(order(sku, 1), version=1)

    writer = threading.Thread(target=keep_starting)
    writer.start()
    try:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {
                "limit": 5,
                "created_after": start,
                **({"cursor": cursor} if cursor else {}),
            }
            page = system.api.get("/sagas", params=params).json()
            seen += [s["id"] for s in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        writer.join()

    assert len(seen) == len(set(seen)), "a saga appeared on two pages"
    assert existing <= set(seen), "a saga that existed before paging was skipped"


def test_abort_before_the_pivot_compensates_what_ran(system: System) -> None:
    sku = new_sku(system, 10)
    system.stop("payment")
    try:
        saga_id = system.start_saga(order(sku), version=1)
        system.wait_timeline(saga_id, "command_sent", "charge_payment")
        response = system.api.post(f"/sagas/{saga_id}/abort", json={"reason": "customer called"})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "compensating"
        again = system.api.post(f"/sagas/{saga_id}/abort", json={"reason": "twice"})
        assert again.status_code == 200
    finally:
        system.start("payment")

    saga = system.wait_final(saga_id)

    assert saga["status"] == "compensated", saga
    aborts = [e for e in saga["timeline"] if e["kind"] == "operator_abort"]
    assert [e["detail"] for e in aborts] == [{"actor": "tester", "reason": "customer called"}]
    assert captured(system, saga_id) == 0
    assert stock(system, sku) == 10


def test_abort_after_the_pivot_is_refused_with_the_reason(system: System) -> None:
    sku = new_sku(system, 10)
    system.stop("shipping")
    try:
        saga_id = system.start_saga(order(sku), saga_type="order_pivot")
        system.wait_timeline(saga_id, "command_sent", "create_shipment")
        response = system.api.post(f"/sagas/{saga_id}/abort", json={"reason": "too late?"})
    finally:
        system.start("shipping")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "action_refused"
    assert "pivot" in response.json()["error"]["message"]
    assert system.wait_final(saga_id)["status"] == "completed"


def test_a_failed_saga_retried_by_an_operator_completes_with_each_effect_once(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    system.stop("shipping")
    try:
        saga_id = system.start_saga(order(sku), saga_type="order_pivot")
        saga = system.wait_final(saga_id)
        # past the pivot nothing is compensated: the lost step waits for an operator
        assert saga["status"] == "failed", saga
        assert saga["steps"][2]["status"] == "timed_out"
    finally:
        system.start("shipping")
    wait_shipping_caught_up(system, saga)

    response = system.api.post(f"/sagas/{saga_id}/retry", json={"reason": "shipping is back"})
    assert response.status_code == 200, response.text
    saga = system.wait_final(saga_id)

    assert saga["status"] == "completed", saga
    assert captured(system, saga_id) == 1
    assert stock(system, sku) == 8
    # the redone attempt was answered from shipping's ledger: one shipment
    assert system.scalar("SELECT count(*) FROM shipping.shipment WHERE saga_id = %s", saga_id) == 1
    retry = system.api.post(f"/sagas/{saga_id}/retry", json={"reason": "again"})
    assert retry.status_code == 409


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_tokens_decide_who_may_read_and_who_may_act(system: System) -> None:
    sku = new_sku(system, 10)
    saga_id = system.wait_final(system.start_saga(order(sku), version=1))["id"]
    with (
        httpx.Client(base_url=system.url) as anonymous,
        httpx.Client(base_url=system.url, headers=bearer(VIEWER_TOKEN)) as viewer,
        httpx.Client(base_url=system.url, headers=bearer("not-a-token")) as wrong,
    ):
        assert anonymous.get(f"/sagas/{saga_id}").status_code == 401
        assert anonymous.get(f"/sagas/{saga_id}").headers["www-authenticate"] == "Bearer"
        assert wrong.get("/sagas").status_code == 401
        assert viewer.get(f"/sagas/{saga_id}").status_code == 200
        assert viewer.get("/sagas/stats").status_code == 200
        forbidden = viewer.post("/sagas", json={"type": "order", "input": order(sku)})
        assert forbidden.status_code == 403
        assert forbidden.json()["error"]["code"] == "forbidden"
        assert viewer.post(f"/sagas/{saga_id}/abort", json={"reason": "x"}).status_code == 403
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200


def test_an_idempotency_key_replays_the_start_and_refuses_a_different_body(
    system: System,
) -> None:
    sku = new_sku(system, 10)
    body = {"type": "order", "input": order(sku), "version": 1}
    key = {"Idempotency-Key": f"key-{uuid.uuid4()}"}

    first = system.api.post("/sagas", json=body, headers=key)
    replay = system.api.post("/sagas", json=body, headers=key)
    other = system.api.post("/sagas", json={**body, "input": order(sku, quantity=5)}, headers=key)

    assert (first.status_code, replay.status_code, other.status_code) == (202, 200, 409)
    assert replay.json()["id"] == first.json()["id"]
    assert other.json()["error"]["code"] == "idempotency_conflict"
    system.wait_final(first.json()["id"])
    assert stock(system, sku) == 8  # one saga, not two


def test_abort_racing_the_last_reply_before_the_pivot_ends_in_one_consistent_state(
    system: System,
) -> None:
    sku = new_sku(system, 100)

    def race(delay: float) -> tuple[str, int]:
        saga_id = system.start_saga(order(sku, 1), saga_type="order_pivot")
        time.sleep(delay)
        response = system.api.post(f"/sagas/{saga_id}/abort", json={"reason": "race"})
        return saga_id, response.status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(race, [i * 0.02 for i in range(12)]))

    taken = 0
    for saga_id, code in outcomes:
        saga = system.wait_final(saga_id)
        finals = [
            e["kind"]
            for e in saga["timeline"]
            if e["kind"] in ("saga_completed", "saga_compensated", "saga_failed")
        ]
        assert len(finals) == 1, saga
        if saga["status"] == "completed":
            # the pivot had passed (the abort was refused), or it was in flight and found
            # applied (the abort was overruled): never a refund of a charge that stands
            kinds = [e["kind"] for e in saga["timeline"]]
            assert code == 409 or (code == 200 and "abort_overruled" in kinds), saga
            assert captured(system, saga_id) == 1
            taken += 1
        else:
            assert (saga["status"], code) == ("compensated", 200), saga
            assert captured(system, saga_id) == 0
            assert (
                system.scalar("SELECT count(*) FROM shipping.shipment WHERE saga_id = %s", saga_id)
                == 0
            )
    assert stock(system, sku) == 100 - taken


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_count_what_happened(system: System) -> None:
    sku = new_sku(system, 10)
    worker = f"http://127.0.0.1:{system.worker_metrics_port}/metrics"
    api_before = system.api.get("/metrics").text
    worker_before = httpx.get(worker).text

    ids = [
        system.start_saga(order(sku, 1), version=1),
        system.start_saga(order(sku, 1), version=1),
        system.start_saga(order(sku, 1, card=DECLINED_CARD), version=1),
    ]
    for saga_id in ids:
        system.wait_final(saga_id)
    worker_after = httpx.get(worker).text

    def moved(before: str, after: str, name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    def gauges_caught_up() -> str | None:
        text = system.api.get("/metrics").text
        finished = sum(
            moved(api_before, text, "saga_sagas", type="order", status=status)
            for status in ("completed", "compensated")
        )
        return text if finished == 3 else None

    # the database gauges are cached for SAGA_METRICS_CACHE_S (15 s by default)
    api_after = wait_for(gauges_caught_up, 20, "the cached gauges to count the sagas", 0.5)

    assert moved(api_before, api_after, "saga_started_total", type="order") == 3
    assert moved(api_before, api_after, "saga_sagas", type="order", status="completed") == 2
    assert moved(api_before, api_after, "saga_sagas", type="order", status="compensated") == 1
    finished = "saga_finished_total"
    assert moved(worker_before, worker_after, finished, type="order", status="completed") == 2
    assert moved(worker_before, worker_after, finished, type="order", status="compensated") == 1
    assert metric(worker_after, "saga_duration_seconds_count", type="order", status="completed")
    assert "saga_outbox_backlog" in api_after
    assert "saga_consumer_lag{" in worker_after


def test_values_the_database_cannot_take_get_a_clear_422(system: System) -> None:
    sku = new_sku(system, 10)
    nul_input = system.api.post(
        "/sagas", json={"type": "order", "input": {**order(sku), "orderId": "o-\u0000"}}
    )
    nul_type = system.api.get("/sagas", params={"type": "order\u0000"})

    assert nul_input.status_code == 422, nul_input.text
    assert "NUL" in nul_input.json()["error"]["details"][0]["problem"]
    assert nul_type.status_code == 422, nul_type.text
    assert system.api.get("/readyz").status_code == 200  # the connection and the api are fine


def cursor_of(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor(value: object) -> str:
    return cursor_of(json.dumps(value).encode())


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/sagas", {"stuck_for": "1000000000d"}),
        ("/sagas", {"stuck_for": "9" * 5000 + "s"}),
        ("/sagas", {"cursor": cursor(["2026-01-01T00:00:00+00:00", "not-a-uuid"])}),
        ("/sagas", {"cursor": cursor_of(b"[" * 10_000)}),
        ("/sagas/00000000-0000-4000-8000-000000000000/timeline", {"after": str(2**64)}),
        ("/sagas/urn:uuid:00000000-0000-4000-8000-000000000000", {}),
    ],
    ids=["days", "digits", "cursor-id", "cursor-deep", "after", "urn"],
)
def test_malformed_parameters_get_a_4xx_never_a_500(
    system: System, path: str, params: dict[str, str]
) -> None:
    response = system.api.get(path, params=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]
    assert system.api.get("/readyz").status_code == 200


def test_a_time_without_a_zone_is_taken_as_utc(system: System) -> None:
    response = system.api.get(
        "/sagas", params={"stuck_for": "10m", "updated_before": "2026-01-01T00:00:00"}
    )
    assert response.status_code == 200, response.text
