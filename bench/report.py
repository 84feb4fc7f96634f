"""The benchmark's outputs: tables on the terminal, `latest.json`, and a latency plot."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.hops import HOPS, percentile
from bench.load import RunResult

PROCESS_ORDER = ("api", "worker", "participants", "coordinator", "client", "postgres", "kafka")


@dataclass
class Summary:
    """One run: what the tables, the JSON and the plot show."""

    name: str
    in_flight: int | None
    rate: float | None
    sagas: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    outcomes: dict[str, int]
    commits_per_saga: float
    messages_per_saga: float
    hops_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms_per_saga: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    mean_batch: dict[str, float] = field(default_factory=dict)  # the worker's
    rows_written_per_saga: float | None = None  # inserted, updated, deleted in its database
    statements_per_saga: float | None = None  # None: no pg_stat_statements

    @classmethod
    def of(
        cls,
        result: RunResult,
        commits: int,
        messages: int,
        hops_ms: dict[str, float],
        cpu_s: dict[str, float],
        peak_rss: dict[str, int],
        rows_written: int | None = None,
        statements: int | None = None,
    ) -> Summary:
        measured = result.measured
        latencies = [o.latency_s * 1000 for o in measured if o.latency_s is not None]
        done = max(1, len(result.finished))
        outcomes: dict[str, int] = {}
        for o in result.outcomes:
            outcomes[o.status] = outcomes.get(o.status, 0) + 1
        return cls(
            name=result.name,
            in_flight=result.concurrency,
            rate=result.rate,
            sagas=len(result.outcomes),
            throughput=result.throughput,
            p50_ms=percentile(latencies, 50),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
            max_ms=max(latencies, default=0.0),
            errors=result.errors,
            outcomes=outcomes,
            commits_per_saga=commits / done,
            messages_per_saga=messages / done,
            hops_ms=hops_ms,
            cpu_ms_per_saga={k: v * 1000 / done for k, v in cpu_s.items()},
            peak_rss_mb={k: v / 2**20 for k, v in peak_rss.items()},
            rows_written_per_saga=None if rows_written is None else rows_written / done,
            statements_per_saga=None if statements is None else statements / done,
        )

    @property
    def load(self) -> str:
        return f"{self.in_flight} in flight" if self.in_flight else f"{self.rate:g}/s open"


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _breakdown(
    title: str,
    columns: Sequence[str],
    runs: list[Summary],
    values: Callable[[Summary], dict[str, float]],
    digits: int,
    total: bool = True,
) -> str:
    """One row per run, one column per hop or process, and their total."""
    rows = []
    for r in runs:
        row = [r.name, *(f"{values(r).get(c, 0):.{digits}f}" for c in columns)]
        rows.append([*row, f"{sum(values(r).values()):.{digits}f}"] if total else row)
    return _table([title, *columns, *(["total"] if total else [])], rows)


def tables(runs: list[Summary]) -> str:
    main = _table(
        ["run", "load", "sagas", "sagas/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors",
         "commits/saga", "stmts/saga", "rows/saga", "msgs/saga", "replies/batch",
         "rows/relay"],
        [
            [r.name, r.load, str(r.sagas), f"{r.throughput:.1f}", f"{r.p50_ms:.1f}",
             f"{r.p95_ms:.1f}", f"{r.p99_ms:.1f}", f"{r.max_ms:.1f}", str(r.errors),
             f"{r.commits_per_saga:.2f}", _maybe(r.statements_per_saga),
             _maybe(r.rows_written_per_saga), f"{r.messages_per_saga:.2f}",
             f"{r.mean_batch.get('replies', 0):.1f}", f"{r.mean_batch.get('outbox', 0):.1f}"]
            for r in runs
        ],
    )  # fmt: skip
    processes = [p for p in PROCESS_ORDER if any(p in r.cpu_ms_per_saga for r in runs)]
    with_hops = [r for r in runs if any(r.hops_ms.values())]
    hops = _breakdown("run (mean ms per saga)", HOPS, with_hops, lambda r: r.hops_ms, 1)
    cpu = _breakdown("run (CPU ms per saga)", processes, runs, lambda r: r.cpu_ms_per_saga, 2)
    rss = _breakdown(
        "run (peak RSS MiB)", processes, runs, lambda r: r.peak_rss_mb, 0, total=False
    )
    return "\n\n".join([main, hops, cpu, rss])


def _maybe(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")


def plot(path: Path, runs: list[Summary], floor: list[Summary]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5), dpi=110)
    closed = sorted(
        (r for r in runs if r.in_flight and r.name.startswith("closed ") and "%" not in r.name),
        key=lambda r: r.throughput,
    )
    for label, style in (("p50", "o"), ("p95", "s"), ("p99", "^")):
        attr = f"{label}_ms"
        axes.plot(
            [r.throughput for r in closed],
            [getattr(r, attr) for r in closed],
            style + "-",
            label=f"orchestrator {label}",
        )
        axes.plot(
            [f.throughput for f in floor],
            [getattr(f, attr) for f in floor],
            style + ":",
            alpha=0.6,
            label=f"floor {label}",
        )
    for r in closed:
        axes.annotate(
            str(r.in_flight),
            (r.throughput, r.p99_ms),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    for r in runs:
        if r.rate:
            axes.plot([r.throughput], [r.p99_ms], "kx", label=f"open loop {r.rate:g}/s p99")
    axes.set_xlabel("completed sagas per second")
    axes.set_ylabel("end-to-end latency, ms (log)")
    axes.set_yscale("log")
    axes.set_title("Order saga: latency against throughput (labels: sagas in flight)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
