"""The default-size fault-injection run, and the broker faults on a three-node cluster, as
part of `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.cluster import three_brokers
from tests.faults import chaos

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_every_invariant_holds_under_crashes_restarts_and_duplicates(tmp_path: Path) -> None:
    # the pauses are timings: reported here, enforced by `make faults`
    ok = chaos.run(size=150, workdir=tmp_path, pause_bounds=False)
    assert ok, "an invariant broke: see the table above"


@pytest.mark.timeout(900)
def test_every_invariant_holds_when_brokers_of_a_cluster_die(tmp_path: Path) -> None:
    """The leader of the busiest partition killed and started again, then one broker killed
    and left down (for a shorter time than `make faults` does), on three nodes."""
    with three_brokers(tmp_path / "kafka3") as cluster:
        ok = chaos.run(
            size=100,
            rate=1.5,  # sagas still start while the broker is down
            workdir=tmp_path / "system",
            pause_bounds=False,
            kafka=cluster.bootstrap,
            services=chaos.local_services(cluster.env),
            broker_down_s=20,
            only=("kill_leader_of_busy_partition", "kill_one_broker"),
        )
    assert ok, "an invariant broke: see the table above"
