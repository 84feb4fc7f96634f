"""Two workers with different saga definitions on one database: each fires the timers of its
own saga types only, and a saga whose type no running worker has waits, shown overdue.

The api knows both sets: `order_fragile` (tests.e2e.sagas, the first worker's) and `orphan`
(tests.e2e.orphan_sagas, the second worker's). No participant runs, so every move of these
sagas is a timer's: a command times out and is sent again until its retries run out, then
the participant is asked to resolve the outcome, and asked again, with backoff, when it does
not answer. While only the first worker runs, the orphans wait, overdue; once the second
starts, both kinds move, and neither worker claims or parks a saga of the other's.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import service_urls
from tests.e2e.orders import order
from tests.e2e.system import System, free_port, wait_for

pytestmark = pytest.mark.e2e

X_DEFINITIONS = "tests.e2e.sagas"
Y_DEFINITIONS = "tests.e2e.orphan_sagas"
X_TYPE, Y_TYPE = "order_fragile", "orphan"
OVERDUE_AFTER_S = 4  # well above the timers' interval (1 s), far below the test's length
TIMER_EVENTS = {
    "step_timed_out",
    "retry_scheduled",
    "command_sent",
    "resolve_sent",
    "resolve_unanswered",
    "saga_parked",
}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("timer_types")
    system = System(database_url, kafka, workdir, definitions=f"{X_DEFINITIONS},{Y_DEFINITIONS}")
    system.env["SAGA_TIMER_OVERDUE_AFTER_S"] = str(OVERDUE_AFTER_S)
    system.extra_env["worker"] = {"SAGA_DEFINITIONS": X_DEFINITIONS}
    with system.running(participants=[]):
        yield system


def start_x(system: System) -> str:
    return system.start_saga(order("SKU-NONE"), saga_type=X_TYPE)


def start_y(system: System) -> str:
    return system.start_saga({"ref": f"r-{uuid.uuid4().hex[:8]}"}, saga_type=Y_TYPE)


def stats(system: System) -> dict[str, Any]:
    response = system.api.get("/sagas/stats")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def listed(system: System, **query: Any) -> set[str]:
    response = system.api.get("/sagas", params={**query, "limit": 500})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def overdue_count(system: System, total: int) -> dict[str, Any] | None:
    """The stats' overdue count once it reaches `total`."""
    overdue: dict[str, Any] = stats(system)["overdue"]
    return overdue if overdue["total"] == total else None


def settle(system: System, saga_ids: list[str]) -> tuple[list[dict[str, Any]], set[str]]:
    """The sagas once every one ran out of retries and was asked again to resolve its
    step's outcome (timers only did that), and every type the stats showed overdue
    meanwhile."""
    overdue_types: set[str] = set()

    def all_asked_again() -> list[dict[str, Any]] | None:
        overdue_types.update(stats(system)["overdue"]["by_type"])
        sagas = [system.saga(saga_id) for saga_id in saga_ids]
        return sagas if all("resolve_unanswered" in kinds(s) for s in sagas) else None

    try:
        sagas = wait_for(all_asked_again, 90, f"{len(saga_ids)} sagas' timers", interval_s=0.5)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{system.logs()}") from None
    return sagas, overdue_types


def kinds(saga: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in saga["timeline"]]


def timer_sagas(system: System, process: str) -> set[str]:
    """The sagas whose timers the process fired, as its log says."""
    fired: set[str] = set()
    for line in (system.workdir / f"{process}.log").read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") in TIMER_EVENTS:
            fired.add(str(entry.get("saga_id")))
    return fired


def start_second_worker(system: System) -> None:
    port = free_port()
    env = {"SAGA_DEFINITIONS": Y_DEFINITIONS, "SAGA_WORKER_METRICS_PORT": str(port)}
    system.start("worker_y", "orchestrator", "worker", env=env)

    def ready() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 60, "the second worker to join its consumer group")


def test_each_worker_fires_its_own_types_and_an_unknown_type_shows_overdue(
    system: System,
) -> None:
    xs = [start_x(system) for _ in range(3)]
    ys = [start_y(system) for _ in range(3)]

    # only the first worker runs: its sagas settle, the orphans wait until they are overdue
    settled_x, overdue_meanwhile = settle(system, xs)
    overdue = wait_for(lambda: overdue_count(system, len(ys)), 30, "the orphans to be overdue")

    assert X_TYPE not in overdue_meanwhile  # a saga being handled is never overdue
    assert overdue == {"total": 3, "by_type": {Y_TYPE: 3}, "after_s": OVERDUE_AFTER_S}
    assert listed(system, overdue="true") == set(ys)
    assert listed(system, overdue="true", type=X_TYPE) == set()
    assert listed(system, overdue="false") == set(xs)
    for saga in settled_x:
        assert saga["status"] == "running", saga
        assert kinds(saga).count("step_timed_out") == 3, saga["timeline"]
        assert "resolve_sent" in kinds(saga), saga["timeline"]
    for saga_id in ys:
        saga = system.saga(saga_id)
        assert saga["status"] == "running", saga
        assert saga["parked_reason"] is None, saga
        assert saga["wake_at"] is not None, saga
        assert kinds(saga) == ["saga_started", "command_sent"], saga["timeline"]
    invalid = system.api.get("/sagas", params={"overdue": "maybe"})
    assert invalid.status_code == 422, invalid.text
    assert invalid.json()["error"]["code"] == "invalid_request"

    # the second worker starts: the orphans move, and new sagas of both types too
    start_second_worker(system)
    more = [start_x(system), start_y(system), start_x(system), start_y(system)]
    settled, overdue_meanwhile = settle(system, [*ys, *more])

    assert X_TYPE not in overdue_meanwhile
    for saga in [*settled_x, *settled]:
        assert saga["status"] == "running", saga
        assert saga["parked_reason"] is None, saga
        assert "saga_parked" not in kinds(saga), saga["timeline"]
        assert "step_timed_out" in kinds(saga), saga["timeline"]
    final = stats(system)
    assert final["overdue"]["total"] == 0, final
    assert final["parked"] == 0, final
    assert listed(system, overdue="true") == set()
    assert listed(system, parked="true") == set()
    all_x = {*xs, more[0], more[2]}
    all_y = {*ys, more[1], more[3]}
    assert timer_sagas(system, "worker") == all_x
    assert timer_sagas(system, "worker_y") == all_y
