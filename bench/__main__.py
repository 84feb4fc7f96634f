"""`python -m bench` (`make bench`): the order saga on the whole system, against its floor.

Starts the api, the worker and the participants on the local PostgreSQL and Kafka, in a
database and topic namespace of their own; runs closed loops at several numbers of sagas in
flight, an open loop at a fixed rate and a run with compensations; then stops them and runs
the floor program (bench/floor.py) the same way. Prints tables and writes
bench/results/latest.json and bench/results/latency.png.
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
from bench.load import SKUS, Load, Outcome, RunResult
from bench.report import Summary
from orchestrator.settings import load_settings
from tests.e2e.system import OPERATOR_TOKEN, System

RESULTS = Path(__file__).resolve().parent / "results"
TARGETS = {
    "throughput_sagas_per_s": (">=", 300.0),
    "p50_ms_at_1": ("<=", 30.0),
    "p99_ms_at_64": ("<=", 250.0),
    "ratio_to_floor": (">=", 0.5),
    "worker_rss_growth": ("<=", 0.10),
    "errors": ("<=", 0),
}


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
        options.levels, options.duration, options.rate = "1,8", 2.0, 5.0
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
        self.servers = probes.server_pids()

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
        commits_before = probes.commits(self.system.admin_url, self.system.db_name)
        metrics_url = f"http://127.0.0.1:{self.system.worker_metrics_port}/metrics"
        batches_before = probes.batch_sizes(metrics_url)
        with probes.sampling(self.pids(processes)) as sampler:
            result = await run()
        usage = sampler.usage
        await asyncio.sleep(1.2)  # PostgreSQL publishes its counters within a second
        commits = probes.commits(self.system.admin_url, self.system.db_name) - commits_before
        offsets_after = await probes.end_offsets(self.kafka, prefix)
        per_topic = probes.messages_between(offsets_before, offsets_after)
        hop_ms: dict[str, float] = {}
        if with_hops:
            records = await probes.read_range(self.kafka, offsets_before, offsets_after)
            hop_ms = hops.per_hop_ms(result, records)
        cpu = _summed_by_group({**usage.cpu_s, **result.own_cpu_s})
        rss = _summed_by_group({**usage.peak_rss, **result.own_peak_rss})
        summary = Summary.of(result, commits, sum(per_topic.values()), hop_ms, cpu, rss)
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
        async with Load(
            self.system.url, OPERATOR_TOKEN, self.kafka, topic, floor_program.PARTITIONS
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
            if o.soak:
                summary, _, usage = await self.measure(
                    processes,
                    self.system.namespace,
                    lambda: load.closed_loop(f"soak 64, {o.soak:g} s", 64, o.soak),
                    with_hops=False,
                )
                runs.append(summary)
                soak = _memory_growth(usage.rss_series.get("worker", []), o.soak)
        return runs, soak

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
    """The participants (the orchestrator's or the floor's) add up to one column."""
    groups: dict[str, Any] = {}
    for name, value in values.items():
        group = name if name in report.PROCESS_ORDER else "participants"
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


def _document(
    runs: list[Summary], floor: list[Summary], soak: dict[str, Any] | None
) -> dict[str, Any]:
    def find(summaries: list[Summary], in_flight: int) -> Summary | None:
        return next((r for r in summaries if r.name == f"closed {in_flight}"), None) or next(
            (r for r in summaries if r.name == f"floor {in_flight}"), None
        )

    at_1, at_64 = find(runs, 1), find(runs, 64)
    floor_1, floor_64 = find(floor, 1), find(floor, 64)
    throughput = at_64.throughput if at_64 else None
    floor_throughput = floor_64.throughput if floor_64 else None
    p50_at_1 = at_1.p50_ms if at_1 else None
    floor_p50 = floor_1.p50_ms if floor_1 else None
    document: dict[str, Any] = {
        "throughput_sagas_per_s": _round(throughput),
        "floor_sagas_per_s": _round(floor_throughput),
        "ratio_to_floor": _round(_ratio(throughput, floor_throughput), 3),
        "p50_ms_at_1": _round(p50_at_1),
        "floor_p50_ms_at_1": _round(floor_p50),
        "p50_ratio_to_floor": _round(_ratio(p50_at_1, floor_p50), 3),
        "p99_ms_at_64": _round(at_64.p99_ms if at_64 else None),
        "errors": sum(r.errors for r in runs),
        "worker_rss_growth": _round(soak.get("growth"), 3) if soak else None,
        "soak": soak,
        "machine": report.machine(),
        "runs": [dataclasses.asdict(r) for r in runs],
        "floor": [dataclasses.asdict(r) for r in floor],
    }
    document["targets"] = {
        name: _verdict(document.get(name), goal) for name, goal in TARGETS.items()
    }
    return document


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
    document = _document(runs, floor, soak)
    print()
    print(report.tables([*runs, *floor]))
    print()
    for key in (
        "throughput_sagas_per_s",
        "floor_sagas_per_s",
        "ratio_to_floor",
        "p50_ms_at_1",
        "floor_p50_ms_at_1",
        "p50_ratio_to_floor",
        "p99_ms_at_64",
        "errors",
    ):
        print(f"{key:<24} {document[key]}")  # fmt: skip
    if soak:
        print(f"{'worker_rss_growth':<24} {soak.get('growth')}")
    for name, verdict in document["targets"].items():
        print(f"target {name:<32} {verdict}")
    report.write_json(options.out / "latest.json", document)
    report.plot(options.out / "latency.png", runs, floor)
    print(f"\nwrote {options.out / 'latest.json'} and {options.out / 'latency.png'}"
          f" in {time.monotonic() - started:.0f} s")  # fmt: skip
    sys.exit(1 if document["errors"] else 0)


if __name__ == "__main__":
    main()
