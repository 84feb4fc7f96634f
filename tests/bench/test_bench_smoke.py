"""The benchmark runs end to end and writes what it promises (figures are not checked here:
timings on a shared machine belong in the benchmark, not in assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_the_benchmark_runs_and_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "sagas/s" in run.stdout
    assert "floor 64" in run.stdout
    result = json.loads((tmp_path / "latest.json").read_text())
    for key in ("throughput_sagas_per_s", "floor_sagas_per_s", "ratio_to_floor",
                "p50_ms_at_1", "p99_ms_at_64", "errors"):  # fmt: skip
        assert key in result
    assert result["errors"] == 0
    assert result["floor_sagas_per_s"] > 0
    assert {r["name"] for r in result["runs"]} >= {"closed 1", "closed 8", "open 5/s"}
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
