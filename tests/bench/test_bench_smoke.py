"""The benchmark runs end to end and writes what it promises (figures are not checked here:
timings on a shared machine belong in the benchmark, not in assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

MEASURED = (  # numbers in every smoke run
    "throughput_sagas_per_s", "floor_sagas_per_s", "ratio_to_floor", "p50_ms_at_1",
    "floor_p50_ms_at_1", "p50_ratio_to_floor", "throughput_at_8", "p50_ms_at_8",
    "p99_ms_at_64", "floor_p99_ms_at_64", "p99_ratio_to_floor", "cpu_ms_per_saga_at_64",
    "rows_written_per_saga", "floor_rows_written_per_saga", "idle_cpu_percent",
    "batch_start_sagas_per_s", "batch_start_ratio_to_floor", "ingress_sagas_per_s",
    "ingress_ratio_to_floor",  # both start paths exist: a null here hides a broken one
)  # fmt: skip
MAYBE = {  # numbers, or null with the reason in not_measured
    "pg_cpu_ms_per_saga_at_64": None,  # null when PostgreSQL is not the local one
    "floor_pg_cpu_ms_per_saga_at_64": None,
    "statements_per_saga": "statements_per_saga",  # without pg_stat_statements
    "floor_statements_per_saga": "floor_statements_per_saga",
}


def test_the_benchmark_runs_and_writes_its_table_json_and_plot(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=400,
    )

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "sagas/s" in run.stdout
    assert "floor 64" in run.stdout
    assert "stmts/saga" in run.stdout
    result = json.loads((tmp_path / "latest.json").read_text())
    for key in (*MEASURED, *MAYBE, "errors", "worker_rss_growth"):
        assert key in result, key
        assert key in run.stdout, key  # the printed summary
    for key in MEASURED:
        assert isinstance(result[key], int | float), (key, result[key])
    for key, reason in MAYBE.items():
        value = result[key]
        assert value is None or isinstance(value, int | float), (key, value)
        if value is None and reason:
            assert result["not_measured"].get(reason), (key, result["not_measured"])
    assert result["errors"] == 0
    assert result["floor_sagas_per_s"] > 0
    assert result["rows_written_per_saga"] > 0
    assert result["p99_ratio_to_floor"] > 0
    names = {r["name"] for r in result["runs"]}
    assert names >= {"closed 1", "closed 8", "closed 64", "open 5/s"}
    assert result["batch_start_sagas_per_s"] > 0
    assert result["ingress_sagas_per_s"] > 0
    assert any(name.startswith("batch ") for name in names)
    assert any(name.startswith("ingress ") for name in names)
    assert set(result["targets"]) >= {
        "ratio_to_floor", "p50_ratio_to_floor", "p50_ms_at_1", "throughput_at_8",
        "p50_ms_at_8", "p99_ratio_to_floor", "cpu_ms_per_saga_at_64",
        "pg_cpu_ms_per_saga_at_64", "idle_cpu_percent", "batch_start_ratio_to_floor",
        "ingress_ratio_to_floor", "errors", "worker_rss_growth",
    }  # fmt: skip
    assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
