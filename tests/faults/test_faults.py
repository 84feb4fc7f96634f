"""The default-size fault-injection run, as part of `make test`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import chaos

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(1200)
def test_every_invariant_holds_under_crashes_restarts_and_duplicates(tmp_path: Path) -> None:
    assert chaos.run(size=150, workdir=tmp_path), "an invariant broke: see the table above"
