"""A saga the worker cannot decide is parked for an operator, and holds up no other saga.

The api of this system knows the `orphan` saga type and the worker does not, as when a new
definition reaches the api before the worker. The orphans' deadlines come due together with
those of order sagas whose shipment times out: every order's timeout fires at once, and the
orphans, once overdue by SAGA_TIMER_ORPHANED_AFTER_S with no worker to decide them, are
parked, visibly.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
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
ORPHANED_AFTER_S = 8


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("parking")
    system = System(database_url, kafka, workdir, definitions=API_DEFINITIONS)
    system.extra_env["worker"] = {
        "SAGA_DEFINITIONS": WORKER_DEFINITIONS,
        "SAGA_TIMER_ORPHANED_AFTER_S": str(ORPHANED_AFTER_S),
    }
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


def wait_parked(system: System, saga_id: str, timeout_s: float = 30) -> dict[str, Any]:
    def parked() -> dict[str, Any] | None:
        saga = system.saga(saga_id)
        return saga if saga["parked_reason"] else None

    try:
        return wait_for(parked, timeout_s, f"saga {saga_id} to be parked")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{system.saga(saga_id)}\n{system.logs()}") from None


def test_a_saga_the_worker_cannot_decide_is_parked_and_the_others_timers_fire(
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
        parked = [wait_parked(system, saga_id) for saga_id in orphans]
    finally:
        system.start("shipping")

    fired_at = []
    for saga in timed_out:
        assert saga["parked_reason"] is None, saga
        first = [e for e in kinds(saga, "step_timed_out") if e["detail"]["attempt"] == 1]
        assert len(first) == 1, saga["timeline"]
        fired_at.append(datetime.fromisoformat(first[0]["at"]))
    parked_at = []
    for saga in parked:
        reason = saga["parked_reason"]
        assert "unknown saga type 'orphan'" in reason, reason
        assert saga["parked_at"] is not None
        entries = kinds(saga, "saga_parked")
        assert [e["detail"]["reason"] for e in entries] == [reason]
        parked_at.append(datetime.fromisoformat(entries[0]["at"]))
    # the orders' deadlines fired, no later than the orphans were parked
    assert max(fired_at) <= min(parked_at), (fired_at, parked_at)

    finals = [system.wait_final(saga_id, timeout_s=60) for saga_id in orders]

    for saga in finals:
        assert saga["status"] in ("completed", "compensated"), saga
        assert saga["parked_reason"] is None, saga
        assert saga["parked_at"] is None, saga
        assert kinds(saga, "step_timed_out", "create_shipment"), saga["timeline"]
        assert not kinds(saga, "saga_parked"), saga["timeline"]
    # the orphans stay parked, their timers stopped: nothing more happened to them
    for before in parked:
        saga = system.saga(before["id"])
        assert saga["status"] == "running"
        assert saga["parked_reason"] == before["parked_reason"]
        assert saga["wake_at"] is None
        assert len(kinds(saga, "saga_parked")) == 1, saga["timeline"]
        assert not kinds(saga, "step_timed_out"), saga["timeline"]
    assert listed(system, parked="true") == set(orphans)
    assert listed(system, parked="false") == {warm_up["id"], *orders}
    stats = system.api.get("/sagas/stats")
    assert stats.status_code == 200, stats.text
    assert stats.json()["parked"] == ORPHANS, stats.json()
    assert stats.json()["outbox_parked"] == 0, stats.json()
