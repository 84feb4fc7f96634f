"""Starting sagas in bulk: POST /sagas/batch, the ingress topic and concurrent POST /sagas."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e import kafka
from tests.e2e.orders import new_sku, order, stock
from tests.e2e.system import System, wait_for

pytestmark = pytest.mark.e2e


def test_a_batch_starts_each_valid_item_once_and_refuses_only_the_bad_ones(system: System) -> None:
    sku = new_sku(system, 10)
    key = f"batch-{uuid.uuid4().hex}"
    items = [
        {"type": "order", "input": order(sku, quantity=1), "idempotencyKey": key},
        {"type": "order", "input": order(sku, quantity=1)},
        {"type": "order", "input": {"orderId": "o-bad"}},  # invalid input
        {"type": "no_such_saga", "input": {}},
        {"type": "order", "input": order(sku, quantity=1), "idempotencyKey": key},  # same key,
    ]  # another body: a conflict

    response = system.api.post("/sagas/batch", json={"sagas": items})

    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == [202, 202, 422, 422, 409]
    assert results[2]["error"]["code"] == "invalid_input"
    assert results[3]["error"]["code"] == "unknown_saga_type"
    assert results[4]["error"]["code"] == "idempotency_conflict"
    started = [results[0]["id"], results[1]["id"]]
    assert all(system.wait_final(i)["status"] == "completed" for i in started)
    assert stock(system, sku) == 8

    again = system.api.post("/sagas/batch", json={"sagas": items[:1]})

    assert again.json()["results"] == [
        {"index": 0, "status": 200, "id": started[0], "error": None}
    ]
    assert stock(system, sku) == 8


def test_a_batch_is_limited_to_a_thousand_items(system: System) -> None:
    item = {"type": "order", "input": order("SKU-RED")}

    assert system.api.post("/sagas/batch", json={"sagas": [item] * 1001}).status_code == 422
    assert system.api.post("/sagas/batch", json={"sagas": []}).status_code == 422


def test_concurrent_starts_each_start_one_saga(system: System) -> None:
    """Group commit: requests arriving together share a transaction, each gets its saga;
    the same key sent twice at once starts one."""
    sku = new_sku(system, 100)
    key = f"twice-{uuid.uuid4().hex}"
    bodies = [order(sku, quantity=1) for _ in range(30)]
    keyed = order(sku, quantity=1)

    def post(body: dict[str, object], key: str | None = None) -> tuple[int, str]:
        headers = {"Idempotency-Key": key} if key else {}
        response = system.api.post(
            "/sagas", json={"type": "order", "input": body}, headers=headers
        )
        return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        plain = list(pool.map(post, bodies))
        twice = list(pool.map(lambda _: post(keyed, key), range(2)))

    assert {status for status, _ in plain} == {202}
    assert len({saga_id for _, saga_id in plain}) == 30
    assert sorted(status for status, _ in twice) == [200, 202]
    assert len({saga_id for _, saga_id in twice}) == 1
    for _, saga_id in [*plain, twice[0]]:
        assert system.wait_final(saga_id)["status"] == "completed"
    assert stock(system, sku) == 100 - 31


def test_the_ingress_topic_starts_each_keyed_start_once(system: System) -> None:
    sku = new_sku(system, 10)
    saga_id = str(uuid.uuid4())
    start = json.dumps({"type": "order", "input": order(sku, quantity=2), "sagaId": saga_id})
    key = f"event-{uuid.uuid4().hex}".encode()
    other_id = str(uuid.uuid4())
    by_key = json.dumps({"type": "order", "input": order(sku, quantity=1), "sagaId": other_id})
    topic = f"{system.namespace}.starts"
    bad = [
        (b"k-not-json", b"{not json"),
        (b"k-unknown", json.dumps({"type": "no_such_saga", "input": {}}).encode()),
        (b"k-invalid", json.dumps({"type": "order", "input": {"orderId": 1}}).encode()),
        (b"", json.dumps({"type": "order", "input": order(sku)}).encode()),
    ]

    kafka.publish(
        system,
        topic,
        [(key, start.encode()), *bad, (key, start.encode()), (b"k2", by_key.encode())],
    )

    for started in (saga_id, other_id):  # started by the worker once it reads the topic
        url = f"/sagas/{started}"
        wait_for(lambda url=url: system.api.get(url).status_code == 200, 60, f"{url} to exist")
        assert system.wait_final(started)["status"] == "completed"
    assert stock(system, sku) == 10 - 2 - 1
    letters = wait_for(
        lambda: (found := kafka.dead(system, topic + ".dlq")) and len(found) >= 4 and found,
        30,
        "the bad starts to be dead-lettered",
    )
    reasons = {letter.key: letter.reason for letter in letters}
    assert "not JSON" in reasons["k-not-json"]
    assert "no_such_saga" in reasons["k-unknown"]
    assert "input" in reasons["k-invalid"]
    assert "keyed" in reasons[""]
    assert system.scalar("SELECT count(*) FROM saga WHERE id = %s", saga_id) == 1
