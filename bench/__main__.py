"""`python -m bench` (`make bench`): the order saga on the whole system, against its floor.

Starts the api, the worker and the participants on the local PostgreSQL and Kafka, in a
database and topic namespace of their own; runs closed loops at several numbers of sagas in
flight, an open loop at a fixed rate and a run with compensations; then stops them and runs
the floor program (bench/floor.py) the same way. Prints tables and writes
bench/results/latest.json and bench/results/latency.png.

Besides the closed and open loops through `POST /sagas`: the CPU the idle system uses
(--idle), and sagas started in batches through `POST /sagas/batch` (--batch) and through
the ingress topic (--ingress), each by --batch-clients clients that start --batch-size
sagas and wait for all of them to finish before starting the next batch. PostgreSQL's
statements (pg_stat_statements) and rows written per saga are counted for every run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import floor as floor_program
from bench import hops, probes, report
from bench.load import SKUS, Load, Outcome, RunResult, Starter, StartUnavailable
from bench.report import Summary
from orchestrator.settings import Settings, load_settings
from tests.e2e.system import OPERATOR_TOKEN, System

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "throughput_sagas_per_s": (">=", 300.0),
    "ratio_to_floor": (">=", 0.5),
    "p50_ms_at_1": ("<=", 25.0),
    "p50_ratio_to_floor": ("<=", 1.5),
    "throughput_at_8": (">=", 150.0),
    "p50_ms_at_8": ("<=", 60.0),
    "p99_ms_at_64": ("<=", 250.0),
    "p99_ratio_to_floor": ("<=", 3.0),
    "cpu_ms_per_saga_at_64": ("<=", 4.0),
    "pg_cpu_ms_per_saga_at_64": ("<=", 2.0),
    "idle_cpu_percent": ("<=", 2.0),
    "batch_start_ratio_to_floor": (">=", 0.7),
    "ingress_ratio_to_floor": (">=", 0.7),
    "worker_rss_growth": ("<=", 0.10),
    # rows of the outbox, the processed replies and the participants' inboxes at the end of
    # the soak against its start: what retention purges stays flat
    "soak_purged_tables_growth": ("<=", 0.5),
    "errors": ("<=", 0),
}
# The figures printed after the tables, in this order (all of them are in latest.json).
HEADLINE = (
    "throughput_sagas_per_s",
    "floor_sagas_per_s",
    "ratio_to_floor",
    "p50_ms_at_1",
    "floor_p50_ms_at_1",
    "p50_ratio_to_floor",
    "throughput_at_8",
    "p50_ms_at_8",
    "p99_ms_at_64",
    "floor_p99_ms_at_64",
    "p99_ratio_to_floor",
    "cpu_ms_per_saga_at_64",
    "pg_cpu_ms_per_saga_at_64",
    "floor_pg_cpu_ms_per_saga_at_64",
    "statements_per_saga",
    "floor_statements_per_saga",
    "rows_written_per_saga",
    "floor_rows_written_per_saga",
    "idle_cpu_percent",
    "batch_start_sagas_per_s",
    "batch_start_ratio_to_floor",
    "ingress_sagas_per_s",
    "ingress_ratio_to_floor",
    "errors",
    "worker_rss_growth",
    "soak_purged_tables_growth",
    "two_of_everything_sagas_per_s",
    "two_of_everything_ratio",
)
START_PATHS = {  # the figures of each start path
    "batch": ("batch_start_sagas_per_s", "batch_start_ratio_to_floor"),
    "ingress": ("ingress_sagas_per_s", "ingress_ratio_to_floor"),
}
OWN_PROCESSES = ("api", "worker", "participants")  # the project's, for CPU per saga and idle
IDLE_SETTLE_S = 3.0  # after the start, before the idle sampling
SCALE_SETTLE_S = 8.0  # after the second instances start, before their run


def _options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--levels", default="1,8,64,256", help="sagas in flight, closed loops")
    parser.add_argument("--duration", type=float, default=20, help="seconds per run")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="open loop: sagas per second (default: 70%% of the best closed-loop throughput; "
        "0: no open loop)",
    )
    parser.add_argument("--compensate", type=float, default=0.2, help="share compensated")
    parser.add_argument("--soak", type=float, default=0, help="seconds at 64 in flight")
    parser.add_argument(
        "--scaled",
        type=float,
        default=None,
        help="seconds at 64 in flight with two workers and two of each participant "
        "(default: --duration; 0: skip)",
    )
    parser.add_argument(
        "--idle", type=float, default=30, help="seconds of CPU sampling, no sagas (0: skip)"
    )
    parser.add_argument(
        "--batch",
        type=float,
        default=None,
        help="seconds of starts through POST /sagas/batch (default: --duration; 0: skip)",
    )
    parser.add_argument(
        "--ingress",
        type=float,
        default=None,
        help="seconds of starts through the ingress topic (default: --duration; 0: skip)",
    )
    parser.add_argument("--batch-size", type=int, default=100, help="sagas per batch")
    parser.add_argument("--batch-clients", type=int, default=4, help="batches in flight")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor program")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="IN_FLIGHT",
        help="py-spy profiles of the api, worker and participants at this closed loop",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--smoke", action="store_true", help="a few seconds of everything: does it all run?"
    )
    options = parser.parse_args()
    if options.smoke:
        options.levels, options.duration, options.rate = "1,8,64", 2.0, 5.0
        options.idle, options.batch, options.ingress, options.batch_size = 2.0, 2.0, 2.0, 10
        options.scaled = 2.0
    for path in ("batch", "ingress", "scaled"):
        if getattr(options, path) is None:
            setattr(options, path, options.duration)
    options.levels = [int(level) for level in options.levels.split(",") if level]
    return options


class Bench:
    def __init__(self, options: argparse.Namespace) -> None:
        settings = load_settings()
        self.options = options
        self.kafka = settings.kafka_bootstrap_servers
        options.out.mkdir(parents=True, exist_ok=True)
        logs = options.out / "logs"
        logs.mkdir(exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        self.system = System(settings.database_url, self.kafka, logs, definitions="")
        self.system.env["SAGA_TOPIC_PARTITIONS"] = str(floor_program.PARTITIONS)
        self.system.env["SAGA_LOG_FORMAT"] = "json"
        # retention short enough for the soak to show the purged tables flat
        self.system.env |= {
            "SAGA_OUTBOX_RETENTION_S": "30",
            "SAGA_TOPIC_RETENTION_S": "60",
            "SAGA_DEDUP_RETENTION_S": "120",
            "SAGA_HOUSEKEEPING_INTERVAL_S": "10",
        }
        self.servers = probes.server_pids()
        self.ingress_topic = _ingress_topic(settings, self.system.namespace)
        self.not_measured: dict[str, str] = {}  # figure -> why it is null
        self.statements = False  # pg_stat_statements answers in the bench database
        self.idle_cpu_percent: float | None = None
        self.idle_by_process: dict[str, float] = {}  # % of one core

    def enable_statements(self) -> None:
        """After the bench database is created: can its statements be counted?"""
        why_not = probes.enable_statements(self.system_db_url)
        self.statements = why_not is None
        if why_not:
            for key in ("statements_per_saga", "floor_statements_per_saga"):
                self.not_measured[key] = why_not
            print(f"  statements not counted: {why_not}", flush=True)

    @property
    def system_db_url(self) -> str:
        return self.system.database_url.replace("postgresql+psycopg://", "postgresql://", 1)

    def pids(self, processes: dict[str, int]) -> dict[str, int]:
        return {**processes, "client": os.getpid(), **self.servers}

    async def measure(
        self,
        processes: dict[str, int],
        namespace: str,
        run: Callable[[], Awaitable[RunResult]],
        with_hops: bool = True,
    ) -> tuple[Summary, RunResult, probes.ProcessUsage]:
        prefix = namespace + "."
        offsets_before = await probes.end_offsets(self.kafka, prefix)
        database_before = probes.database_counters(self.system.admin_url, self.system.db_name)
        statements_before = probes.statement_calls(self.system_db_url) if self.statements else {}
        metrics_url = f"http://127.0.0.1:{self.system.worker_metrics_port}/metrics"
        batches_before = probes.batch_sizes(metrics_url)
        with probes.sampling(self.pids(processes)) as sampler:
            result = await run()
        usage = sampler.usage
        await asyncio.sleep(1.2)  # PostgreSQL publishes its counters within a second
        database = (
            probes.database_counters(self.system.admin_url, self.system.db_name) - database_before
        )
        statements = (
            probes.calls_between(statements_before, probes.statement_calls(self.system_db_url))
            if self.statements
            else None
        )
        offsets_after = await probes.end_offsets(self.kafka, prefix)
        per_topic = probes.messages_between(offsets_before, offsets_after)
        hop_ms: dict[str, float] = {}
        if with_hops:
            records = await probes.read_range(self.kafka, offsets_before, offsets_after)
            hop_ms = hops.per_hop_ms(result, records)
        cpu = _summed_by_group({**usage.cpu_s, **result.own_cpu_s})
        rss = _summed_by_group({**usage.peak_rss, **result.own_peak_rss})
        summary = Summary.of(
            result,
            database.commits,
            sum(per_topic.values()),
            hop_ms,
            cpu,
            rss,
            rows_written=database.rows_written,
            statements=statements,
        )
        for kind, (total, count) in probes.batch_sizes(metrics_url).items():
            total_before, count_before = batches_before.get(kind, (0.0, 0.0))
            if count > count_before:
                summary.mean_batch[kind] = (total - total_before) / (count - count_before)
        print(f"  {summary.name}: {summary.throughput:.1f} sagas/s, p50 {summary.p50_ms:.1f} ms,"
              f" p99 {summary.p99_ms:.1f} ms, {summary.errors} errors", flush=True)  # fmt: skip
        return summary, result, usage

    async def orchestrator_runs(self) -> tuple[list[Summary], dict[str, Any] | None]:
        o = self.options
        processes = {name: p.pid for name, p in self.system.processes.items()}
        topic = f"{self.system.namespace}.events"
        runs: list[Summary] = []
        soak: dict[str, Any] | None = None
        if o.idle:
            await self.idle(processes, o.idle)
        else:
            self.not_measured["idle_cpu_percent"] = "skipped (--idle 0)"
        async with Load(
            self.system.url,
            OPERATOR_TOKEN,
            self.kafka,
            topic,
            floor_program.PARTITIONS,
            ingress_topic=self.ingress_topic,
        ) as load:
            await load.closed_loop("warm-up", 8, min(3.0, o.duration))
            for level in o.levels:
                profiling = self._profile(processes, o.duration) if o.profile == level else []

                def closed(level: int = level) -> Awaitable[RunResult]:
                    return load.closed_loop(f"closed {level}", level, o.duration)

                summary, _, _ = await self.measure(processes, self.system.namespace, closed)
                for profiler in profiling:
                    profiler.wait()
                runs.append(summary)
            rate = o.rate
            if rate is None:
                rate = round(0.7 * max((r.throughput for r in runs), default=10.0))
            if rate:
                summary, _, _ = await self.measure(
                    processes,
                    self.system.namespace,
                    lambda: load.open_loop(f"open {rate:g}/s", rate, o.duration),
                )
                runs.append(summary)
            if o.compensate:
                name = f"closed 64, {o.compensate:.0%} compensated"
                summary, _, _ = await self.measure(
                    processes,
                    self.system.namespace,
                    lambda: load.closed_loop(name, 64, o.duration, o.compensate),
                )
                runs.append(summary)
            runs += await self.start_paths(processes, load)
            if not o.soak:
                self.not_measured["worker_rss_growth"] = "skipped (--soak 0)"
            else:
                tables_before = probes.table_sizes(self.system_db_url)
                summary, _, usage = await self.measure(
                    processes,
                    self.system.namespace,
                    lambda: load.closed_loop(f"soak 64, {o.soak:g} s", 64, o.soak),
                    with_hops=False,
                )
                runs.append(summary)
                soak = _memory_growth(usage.rss_series.get("worker", []), o.soak)
                soak["tables"] = _table_growth(
                    tables_before, probes.table_sizes(self.system_db_url)
                )
            if o.scaled:
                runs.append(await self.two_of_everything(processes, load))
            else:
                self.not_measured["two_of_everything_ratio"] = "skipped (--scaled 0)"
        return runs, soak

    async def two_of_everything(self, processes: dict[str, int], load: Load) -> Summary:
        """Closed 64 with a second worker and a second instance of each participant, each
        its own static group member: the partitions are shared, the machine too."""
        system = self.system
        system.start("worker2", "orchestrator", "worker", env={"SAGA_WORKER_METRICS_PORT": "0"})
        for name in floor_program.STEPS:
            system.start(f"{name}2", "participants", "worker", name)
        await asyncio.sleep(SCALE_SETTLE_S)  # the groups rebalance over the new members
        scaled = {**processes, **{n: p.pid for n, p in system.processes.items()}}
        name = "closed 64, two of everything"
        summary, _, _ = await self.measure(
            scaled,
            system.namespace,
            lambda: load.closed_loop(name, 64, self.options.scaled),
        )
        for extra in ["worker2", *(f"{n}2" for n in floor_program.STEPS)]:
            system.stop(extra)
        return summary

    async def floor_runs(self) -> list[Summary]:
        """The floor program at 1 and at 64 in flight, with the orchestrator stopped."""
        namespace = f"{self.system.namespace}floor"
        dsn = self.system.database_url.replace("postgresql+psycopg://", "postgresql://")
        await _create_topics(self.kafka, namespace)
        setup = [sys.executable, "-m", "bench.floor", "setup", "--dsn", dsn]
        await asyncio.to_thread(subprocess.run, setup, check=True)
        common = ["--dsn", dsn, "--kafka", self.kafka, "--namespace", namespace]
        participants = {
            name: self._spawn(f"floor-{name}", ["participant", name, *common])
            for name in ("inventory", "payment", "shipping")
        }
        await asyncio.sleep(4)  # the consumers join their groups
        summaries = []
        try:
            for level in (1, 64):
                out = self.options.out / f"floor-{level}.json"
                args = ["coordinator", *common, "--concurrency", str(level)]
                args += ["--duration", str(self.options.duration), "--out", str(out)]

                async def run(
                    args: list[str] = args, out: Path = out, level: int = level
                ) -> RunResult:
                    coordinator = self._spawn("floor-coordinator", args)
                    code = await asyncio.to_thread(coordinator.wait)
                    if code != 0:
                        raise RuntimeError(f"the floor coordinator exited with {code}")
                    return _result_of(out, f"floor {level}", level)

                pids = {f"floor-{n}": p.pid for n, p in participants.items()}
                summary, _, _ = await self.measure(pids, namespace, run, with_hops=False)
                summaries.append(summary)
        finally:
            for process in participants.values():
                process.send_signal(signal.SIGTERM)
                process.wait(10)
        return summaries

    async def idle(self, processes: dict[str, int], seconds: float) -> None:
        """CPU of the api, worker and participants with no saga to run, in % of one core."""
        await asyncio.sleep(min(IDLE_SETTLE_S, seconds))
        with probes.sampling(processes) as sampler:
            await asyncio.sleep(seconds)
        self.idle_by_process = {
            name: round(100 * cpu_s / seconds, 2) for name, cpu_s in sampler.usage.cpu_s.items()
        }
        self.idle_cpu_percent = 100 * sum(sampler.usage.cpu_s.values()) / seconds
        print(f"  idle {seconds:g} s: {self.idle_cpu_percent:.2f}% of one core"
              f" {self.idle_by_process}", flush=True)  # fmt: skip

    async def start_paths(self, processes: dict[str, int], load: Load) -> list[Summary]:
        """The batched runs through `POST /sagas/batch` and the ingress topic."""
        runs = []
        for path, seconds, start in (
            ("batch", self.options.batch, load.post_batch),
            ("ingress", self.options.ingress, load.produce_starts),
        ):
            if not seconds:
                self.not_measured |= dict.fromkeys(START_PATHS[path], f"skipped (--{path} 0)")
                continue
            summary = await self.batched(processes, load, path, start, seconds)
            runs += [summary] if summary else []
        return runs

    async def batched(
        self,
        processes: dict[str, int],
        load: Load,
        path: str,
        start: Starter,
        seconds: float,
    ) -> Summary | None:
        """A closed loop of batches through one start path; None when the path is missing
        (the reason goes to not_measured)."""
        o = self.options
        try:
            await load.probe_batch(start, o.batch_size)  # also its warm-up
        except StartUnavailable as exc:
            self.not_measured |= dict.fromkeys(START_PATHS[path], str(exc))
            print(f"  {path}: not measured: {exc}", flush=True)
            return None
        name = f"{path} {o.batch_clients}x{o.batch_size}"
        summary, _, _ = await self.measure(
            processes,
            self.system.namespace,
            lambda: load.batched(name, start, o.batch_clients, o.batch_size, seconds),
        )
        return summary

    def _profile(self, processes: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
        """py-spy, sampling each process for the run; collapsed stacks in results/profiles."""
        folder = self.options.out / "profiles"
        folder.mkdir(exist_ok=True)
        py_spy = str(Path(sys.executable).parent / "py-spy")
        return [
            subprocess.Popen(
                [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                 "--rate", "200", "--format", "raw", "--nonblocking", "--gil",
                 "--output", str(folder / f"{name}.txt")],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name, pid in processes.items()
        ]  # fmt: skip

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.options.out / "logs" / f"{name}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "bench.floor", *args], stdout=log,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _summed_by_group(values: dict[str, Any]) -> dict[str, Any]:
    """The participants (the orchestrator's or the floor's) add up to one column, and a
    second instance (worker2) to its first's."""
    groups: dict[str, Any] = {}
    for name, value in values.items():
        base = name.rstrip("0123456789") or name
        group = base if base in report.PROCESS_ORDER else "participants"
        groups[group] = groups.get(group, 0) + value
    return groups


def _memory_growth(series: list[tuple[float, int]], duration: float) -> dict[str, Any]:
    """RSS growth of the worker after the warm-up (the first tenth, at least a minute)."""
    warmup = min(60.0, duration / 10)
    after = [rss for at, rss in series if at >= warmup]
    if not after:
        return {"growth": None}
    baseline = after[0]
    return {
        "warmup_s": warmup,
        "rss_after_warmup_mib": baseline / 2**20,
        "rss_peak_mib": max(after) / 2**20,
        "rss_end_mib": after[-1] / 2**20,
        "growth": max(after) / baseline - 1,
    }


PURGED_TABLES = (
    "outbox",
    "processed_message",
    "inventory.inbox",
    "payment.inbox",
    "shipping.inbox",
)


def _table_growth(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """Rows and bytes of every table at the start and the end of the soak, and the growth
    of the purged ones' rows together."""
    tables = {
        name: {
            "rows": [before.get(name, (0, 0))[0], rows],
            "bytes": [before.get(name, (0, 0))[1], size],
        }
        for name, (rows, size) in sorted(after.items())
    }
    start = sum(tables[t]["rows"][0] for t in PURGED_TABLES if t in tables)
    end = sum(tables[t]["rows"][1] for t in PURGED_TABLES if t in tables)
    return {"by_table": tables, "purged_growth": end / start - 1 if start else None}


def _document(
    runs: list[Summary],
    floor: list[Summary],
    soak: dict[str, Any] | None,
    idle_cpu_percent: float | None = None,
    not_measured: dict[str, str] | None = None,
) -> dict[str, Any]:
    def find(summaries: list[Summary], name: str, prefix: bool = False) -> Summary | None:
        return next(
            (r for r in summaries if r.name == name or (prefix and r.name.startswith(name))), None
        )

    at_1, at_8, at_64 = find(runs, "closed 1"), find(runs, "closed 8"), find(runs, "closed 64")
    floor_1, floor_64 = find(floor, "floor 1"), find(floor, "floor 64")
    batch, ingress = find(runs, "batch ", prefix=True), find(runs, "ingress ", prefix=True)
    throughput, floor_throughput = _of(at_64, "throughput"), _of(floor_64, "throughput")
    scaled = _of(find(runs, "closed 64, two of everything"), "throughput")
    figures: dict[str, Any] = {
        "two_of_everything_sagas_per_s": scaled,
        "two_of_everything_ratio": _ratio(scaled, throughput),
        "throughput_sagas_per_s": throughput,
        "floor_sagas_per_s": floor_throughput,
        "ratio_to_floor": _ratio(throughput, floor_throughput),
        "p50_ms_at_1": _of(at_1, "p50_ms"),
        "floor_p50_ms_at_1": _of(floor_1, "p50_ms"),
        "p50_ratio_to_floor": _ratio(_of(at_1, "p50_ms"), _of(floor_1, "p50_ms")),
        "throughput_at_8": _of(at_8, "throughput"),
        "p50_ms_at_8": _of(at_8, "p50_ms"),
        "p99_ms_at_64": _of(at_64, "p99_ms"),
        "floor_p99_ms_at_64": _of(floor_64, "p99_ms"),
        "p99_ratio_to_floor": _ratio(_of(at_64, "p99_ms"), _of(floor_64, "p99_ms")),
        "cpu_ms_per_saga_at_64": _cpu_ms(at_64, OWN_PROCESSES),
        "pg_cpu_ms_per_saga_at_64": _cpu_ms(at_64, ("postgres",)),
        "floor_pg_cpu_ms_per_saga_at_64": _cpu_ms(floor_64, ("postgres",)),
        "statements_per_saga": _of(at_64, "statements_per_saga"),
        "floor_statements_per_saga": _of(floor_64, "statements_per_saga"),
        "rows_written_per_saga": _of(at_64, "rows_written_per_saga"),
        "floor_rows_written_per_saga": _of(floor_64, "rows_written_per_saga"),
        "idle_cpu_percent": idle_cpu_percent,
        "batch_start_sagas_per_s": _of(batch, "throughput"),
        "batch_start_ratio_to_floor": _ratio(_of(batch, "throughput"), floor_throughput),
        "ingress_sagas_per_s": _of(ingress, "throughput"),
        "ingress_ratio_to_floor": _ratio(_of(ingress, "throughput"), floor_throughput),
    }
    document: dict[str, Any] = {
        key: _round(value, 3 if "ratio" in key else 2 if "per_saga" in key else 1)
        for key, value in figures.items()
    }
    document |= {
        "errors": sum(r.errors for r in runs),
        "worker_rss_growth": _round(soak.get("growth"), 3) if soak else None,
        "soak_purged_tables_growth": _round(soak["tables"]["purged_growth"], 3)
        if soak and soak.get("tables")
        else None,
        "not_measured": {k: v for k, v in (not_measured or {}).items() if document.get(k) is None},
        "soak": soak,
        "machine": report.machine(),
        "runs": [dataclasses.asdict(r) for r in runs],
        "floor": [dataclasses.asdict(r) for r in floor],
    }
    document["targets"] = {
        name: _verdict(document.get(name), goal) for name, goal in TARGETS.items()
    }
    return document


def _of(summary: Summary | None, attribute: str) -> float | None:
    return None if summary is None else getattr(summary, attribute)


def _cpu_ms(summary: Summary | None, groups: tuple[str, ...]) -> float | None:
    """CPU ms per saga of these process groups together; None when none was sampled."""
    if summary is None or not any(g in summary.cpu_ms_per_saga for g in groups):
        return None
    return sum(summary.cpu_ms_per_saga.get(g, 0.0) for g in groups)


def _verdict(value: float | None, goal: tuple[str, float]) -> str:
    direction, bound = goal
    if value is None:
        return f"not measured (goal {direction} {bound:g})"
    met = value <= bound if direction == "<=" else value >= bound
    return f"{'met' if met else 'MISSED'}: {value:g} (goal {direction} {bound:g})"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _result_of(path: Path, name: str, level: int) -> RunResult:
    data = json.loads(path.read_text())
    result = RunResult(name, level, None, data["duration_s"])
    start, end = data["window"]
    result.window = (start, end)
    result.final_seen_at = data["final_seen_at"]
    result.outcomes = [Outcome(**o) for o in data["outcomes"]]
    result.own_cpu_s = {"coordinator": data["cpu_s"]}
    result.own_peak_rss = {"coordinator": data["peak_rss"]}
    return result


def _ingress_topic(settings: Settings, namespace: str) -> str:
    """`<namespace>.starts`: as the settings name it once they know the channel."""
    topic = settings.model_copy(update={"topic_namespace": namespace}).topic("starts")
    return topic if topic.endswith(".starts") else f"{namespace}.starts"


async def _create_topics(kafka: str, namespace: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","))
    await admin.start()
    try:
        names = [f"{namespace}.{n}.commands" for n in ("inventory", "payment", "shipping")]
        names += [f"{namespace}.replies", f"{namespace}.events"]
        await admin.create_topics([NewTopic(n, floor_program.PARTITIONS, 1) for n in names])
    finally:
        await admin.close()
    await asyncio.sleep(1)


def main() -> None:
    options = _options()
    bench = Bench(options)
    system = bench.system
    started = time.monotonic()
    print(f"bench: database {system.db_name}, topics {system.namespace}.*", flush=True)
    system.create_database()
    floor: list[Summary] = []
    try:
        bench.enable_statements()
        system.start_all(participants=list(floor_program.STEPS))  # the order saga's
        with system.sql() as conn:  # stock enough for any run
            conn.cursor().executemany(
                "INSERT INTO inventory.stock (sku, quantity) VALUES (%s, %s) "
                "ON CONFLICT (sku) DO UPDATE SET quantity = EXCLUDED.quantity",
                [(sku, 2_000_000_000) for sku in SKUS],
            )
        runs, soak = asyncio.run(bench.orchestrator_runs())
        system.stop_all()
        if not options.no_floor:
            floor = asyncio.run(bench.floor_runs())
    finally:
        system.stop_all()
        system.drop_database()
        system.delete_topics()
    document = _document(runs, floor, soak, bench.idle_cpu_percent, bench.not_measured)
    document["idle_cpu_percent_by_process"] = bench.idle_by_process
    print()
    print(report.tables([*runs, *floor]))
    print()
    for key in HEADLINE:
        print(f"{key:<32} {document[key]}")
    if soak and soak.get("tables"):
        print("\ntables at the start and the end of the soak (rows, MiB):")
        for name, size in soak["tables"]["by_table"].items():
            (r0, r1), (b0, b1) = size["rows"], size["bytes"]
            print(f"  {name:<28} {r0:>9} -> {r1:<9} {b0 / 2**20:8.1f} -> {b1 / 2**20:.1f}")
    for key, why in document["not_measured"].items():
        print(f"not measured: {key}: {why}")
    for name, verdict in document["targets"].items():
        print(f"target {name:<32} {verdict}")
    report.write_json(options.out / "latest.json", document)
    report.plot(options.out / "latency.png", runs, floor)
    print(f"\nwrote {options.out / 'latest.json'} and {options.out / 'latency.png'}"
          f" in {time.monotonic() - started:.0f} s")  # fmt: skip
    sys.exit(1 if document["errors"] else 0)


if __name__ == "__main__":
    main()
