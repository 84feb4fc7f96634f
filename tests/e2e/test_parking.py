"""A saga no running worker can decide waits for one that can, shown overdue, and holds up no
other saga.

The api of this system knows the `orphan` saga type and the worker does not, as when a new
definition reaches the api before the worker. The orphans' deadlines come due together with
those of order sagas whose shipment times out: every order's timeout fires at once, and the
orphans are left alone (not parked: a worker with their definition may come), counted and
listed as overdue once their wake time is SAGA_TIMER_OVERDUE_AFTER_S past.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_urls
from tests.e2e.orders import new_sku, order
from tests.e2e.system import System, wait_for

pytestmark = pytest.mark.e2e

API_DEFINITIONS = "tests.e2e.sagas,tests.e2e.orphan_sagas"
WORKER_DEFINITIONS = "tests.e2e.sagas"  # no `orphan`
PARTICIPANTS = ["inventory", "payment", "shipping"]  # no `flight`, which `orphan` books
ORPHANS = 3
ORDERS = 3
OVERDUE_AFTER_S = 8


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("parking")
    system = System(database_url, kafka, workdir, definitions=API_DEFINITIONS)
    system.env["SAGA_TIMER_OVERDUE_AFTER_S"] = str(OVERDUE_AFTER_S)  # the api counts them
    system.extra_env["worker"] = {"SAGA_DEFINITIONS": WORKER_DEFINITIONS}
    with system.running(PARTICIPANTS):
        yield system


def kinds(saga: dict[str, Any], kind: str, step: str | None = None) -> list[dict[str, Any]]:
    return [e for e in saga["timeline"] if e["kind"] == kind and step in (None, e["step"])]


def listed(system: System, **query: Any) -> set[str]:
    response = system.api.get("/sagas", params={**query, "limit": 500})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_cursor"] is None
    return {item["id"] for item in page["items"]}


def overdue_count(system: System, total: int) -> dict[str, Any] | None:
    """The stats' overdue count once it reaches `total`."""
    stats = system.api.get("/sagas/stats")
    assert stats.status_code == 200, stats.text
    counts: dict[str, Any] = stats.json()["overdue"]
    return counts if counts["total"] == total else None


def test_a_saga_the_worker_cannot_decide_waits_overdue_and_the_others_timers_fire(
    system: System,
) -> None:
    sku = new_sku(system, 20)
    # every participant answers before the test begins
    warm_up = system.wait_final(system.start_saga(order(sku), version=2), timeout_s=60)
    assert warm_up["status"] == "completed", warm_up

    system.stop("shipping")
    try:
        orders = [system.start_saga(order(sku), version=2) for _ in range(ORDERS)]
        for saga_id in orders:
            system.wait_timeline(saga_id, "command_sent", "create_shipment", timeout_s=30)
        # With the worker stopped, the orders' shipment deadlines and the orphans' deadlines
        # all pass: the restarted worker finds them due together.
        system.stop("worker")
        orphans = [
            system.start_saga({"ref": f"r-{uuid.uuid4().hex[:8]}"}, saga_type="orphan")
            for _ in range(ORPHANS)
        ]
        time.sleep(2.5)
        system.start("worker")  # still with the definitions of WORKER_DEFINITIONS only
        timed_out = [
            system.wait_timeline(saga_id, "step_timed_out", "create_shipment", timeout_s=30)
            for saga_id in orders
        ]
        counted = wait_for(lambda: overdue_count(system, ORPHANS), 30, "the orphans overdue")
    finally:
        system.start("shipping")

    for saga in timed_out:
        assert saga["parked_reason"] is None, saga
        first = [e for e in kinds(saga, "step_timed_out") if e["detail"]["attempt"] == 1]
        assert len(first) == 1, saga["timeline"]
    assert counted == {
        "total": ORPHANS,
        "by_type": {"orphan": ORPHANS},
        "after_s": OVERDUE_AFTER_S,
    }
    assert listed(system, overdue="true") == set(orphans)

    finals = [system.wait_final(saga_id, timeout_s=60) for saga_id in orders]

    for saga in finals:
        assert saga["status"] in ("completed", "compensated"), saga
        assert saga["parked_reason"] is None, saga
        assert saga["parked_at"] is None, saga
        assert kinds(saga, "step_timed_out", "create_shipment"), saga["timeline"]
        assert not kinds(saga, "saga_parked"), saga["timeline"]
    # the orphans wait for a worker with their definition: nothing happened to them
    for saga_id in orphans:
        saga = system.saga(saga_id)
        assert saga["status"] == "running"
        assert saga["parked_reason"] is None, saga
        assert saga["wake_at"] is not None, saga
        assert [e["kind"] for e in saga["timeline"]] == ["saga_started", "command_sent"]
    assert listed(system, overdue="true") == set(orphans)
    assert listed(system, overdue="false") == {warm_up["id"], *orders}
    assert listed(system, parked="true") == set()
    stats = system.api.get("/sagas/stats")
    assert stats.status_code == 200, stats.text
    assert stats.json()["parked"] == 0, stats.json()
    assert stats.json()["outbox_parked"] == 0, stats.json()
    assert stats.json()["overdue"]["by_type"] == {"orphan": ORPHANS}, stats.json()
