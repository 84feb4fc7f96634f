"""The default-size fault-injection run, as part of `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import chaos

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_every_invariant_holds_under_crashes_restarts_and_duplicates(tmp_path: Path) -> None:
    # the pauses are timings: reported here, enforced by `make faults`
    ok = chaos.run(size=150, workdir=tmp_path, pause_bounds=False)
    assert ok, "an invariant broke: see the table above"
