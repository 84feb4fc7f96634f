"""What the benchmark measures besides latency: CPU and memory per process, PostgreSQL
commits, rows written and statements, Kafka messages."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

ROOT = Path(__file__).resolve().parents[1]
POSTMASTER_PID = ROOT / ".local" / "postgres" / "data" / "postmaster.pid"
KAFKA_PID = ROOT / ".local" / "kafka" / "kafka.pid"
SERVERS = ("postgres", "kafka")  # counted with their children: PostgreSQL's backends


def server_pids() -> dict[str, int]:
    """The local PostgreSQL and Kafka servers, when `deploy/local/services` started them."""
    pids = {}
    for name, path in (("postgres", POSTMASTER_PID), ("kafka", KAFKA_PID)):
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            pid = int(path.read_text().split()[0])
            if psutil.pid_exists(pid):
                pids[name] = pid
    return pids


def _cpu_s(process: psutil.Process, with_children: bool) -> float:
    """CPU seconds of a process and, for a server, of all its children, living and exited."""
    times = process.cpu_times()
    total: float = times.user + times.system
    if not with_children:
        return total
    total += times.children_user + times.children_system
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child_times = child.cpu_times()
            total += child_times.user + child_times.system
    return total


def _rss(process: psutil.Process, with_children: bool) -> int:
    rss: int = process.memory_info().rss
    if not with_children:
        return rss
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            rss += child.memory_info().rss
    return rss


@dataclass
class ProcessUsage:
    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    rss_series: dict[str, list[tuple[float, int]]] = field(default_factory=dict)


class ProcessSampler:
    """Samples the RSS of named processes in a thread; CPU is read at start and stop."""

    def __init__(self, pids: dict[str, int], interval_s: float = 1.0) -> None:
        self._processes = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._cpu_at_start: dict[str, float] = {}
        self.usage = ProcessUsage()

    def start(self) -> None:
        self._cpu_at_start = self._cpu()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def stop(self) -> ProcessUsage:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        end = self._cpu()
        self.usage.cpu_s = {n: end[n] - self._cpu_at_start.get(n, 0.0) for n in end}
        return self.usage

    def _cpu(self) -> dict[str, float]:
        cpu = {}
        for name, process in self._processes.items():
            with contextlib.suppress(psutil.NoSuchProcess):
                cpu[name] = _cpu_s(process, name in SERVERS)
        return cpu

    def _sample(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self._interval_s):
            at = time.monotonic() - started
            for name, process in self._processes.items():
                try:
                    rss = _rss(process, name in SERVERS)
                except psutil.NoSuchProcess:
                    continue
                peak = self.usage.peak_rss
                peak[name] = max(peak.get(name, 0), rss)
                self.usage.rss_series.setdefault(name, []).append((at, rss))


@contextlib.contextmanager
def sampling(pids: dict[str, int]) -> Iterator[ProcessSampler]:
    sampler = ProcessSampler(pids)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


def commits(admin_url: str, database: str) -> int:
    """Transactions committed in a database so far (PostgreSQL flushes this within 1 s)."""
    return database_counters(admin_url, database).commits


@dataclass(frozen=True)
class DatabaseCounters:
    commits: int = 0
    rows_written: int = 0  # rows inserted, updated and deleted

    def __sub__(self, other: DatabaseCounters) -> DatabaseCounters:
        return DatabaseCounters(
            self.commits - other.commits, self.rows_written - other.rows_written
        )


def database_counters(admin_url: str, database: str) -> DatabaseCounters:
    """A database's counters in pg_stat_database so far (flushed within 1 s)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted"
            " FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
        return DatabaseCounters(int(row[0]), int(row[1])) if row else DatabaseCounters()


# The snapshot below runs in the measured database: it and CREATE EXTENSION are left out.
_STATEMENT_CALLS = """
SELECT userid, queryid, sum(calls)::bigint FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT LIKE '%pg_stat_statements%'
GROUP BY userid, queryid
"""


def enable_statements(database_url: str) -> str | None:
    """pg_stat_statements in a database: None when it answers, else why not. It needs the
    server to preload the library (deploy/local/services configures it)."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute(_STATEMENT_CALLS).fetchall()
    except psycopg.Error as exc:
        return f"pg_stat_statements: {str(exc).strip().splitlines()[0]}"
    return None


def statement_calls(database_url: str) -> dict[tuple[int, int], int]:
    """Calls so far of each statement run in the database, by (role, query id)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(_STATEMENT_CALLS).fetchall()
    return {(int(r[0]), int(r[1] or 0)): int(r[2]) for r in rows}


def calls_between(before: dict[tuple[int, int], int], after: dict[tuple[int, int], int]) -> int:
    """Statements run between two snapshots (an entry evicted meanwhile is lost)."""
    return sum(max(0, calls - before.get(key, 0)) for key, calls in after.items())


async def end_offsets(bootstrap: str, prefix: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of every topic whose name starts with `prefix`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap.split(","))
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix)]
        described = await admin.describe_topics(topics) if topics else []
    finally:
        await admin.close()
    partitions = [
        TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]
    ]
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap.split(","), enable_auto_commit=False)
    await consumer.start()
    try:
        offsets: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        return offsets
    finally:
        await consumer.stop()


def messages_between(
    before: dict[TopicPartition, int], after: dict[TopicPartition, int]
) -> dict[str, int]:
    per_topic: dict[str, int] = {}
    for tp, end in after.items():
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + end - before.get(tp, 0)
    return per_topic


async def read_range(
    bootstrap: str, before: dict[TopicPartition, int], after: dict[TopicPartition, int]
) -> list[tuple[str, int, bytes]]:
    """(topic, broker timestamp in ms, value) of every record between two offset snapshots."""
    wanted = {tp: end for tp, end in after.items() if end > before.get(tp, 0)}
    if not wanted:
        return []
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap.split(","), enable_auto_commit=False, max_poll_records=5000
    )
    await consumer.start()
    records: list[tuple[str, int, bytes]] = []
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, before.get(tp, 0))
        remaining = dict(wanted)
        while remaining:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            for tp, batch_records in batch.items():
                for r in batch_records:
                    if r.offset < wanted[tp]:
                        records.append((tp.topic, r.timestamp, r.value or b""))
                    if r.offset + 1 >= wanted[tp]:
                        remaining.pop(tp, None)
    finally:
        await consumer.stop()
    return records


def batch_sizes(metrics_url: str) -> dict[str, tuple[float, float]]:
    """(sum, count) of the worker's batch-size histograms: replies and outbox rounds."""
    import re
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found: dict[str, list[float]] = {}
    pattern = r"^saga_(consumed|outbox_relay)_batch_size_(sum|count)(\{[^}]*\})? (\S+)$"
    for name, part, _labels, value in re.findall(pattern, text, re.MULTILINE):
        key = "replies" if name == "consumed" else "outbox"
        found.setdefault(key, [0.0, 0.0])[0 if part == "sum" else 1] += float(value)
    return {k: (v[0], v[1]) for k, v in found.items()}


_TABLES = """
SELECT format('%I.%I', schemaname, relname), schemaname, relname, pg_total_relation_size(relid)
FROM pg_stat_user_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND relname <> 'alembic_version'
      AND relname NOT LIKE '%alembic_version'
"""


def table_sizes(database_url: str) -> dict[str, tuple[int, int]]:
    """Rows (counted) and bytes (with indexes and TOAST) of every table of the database, by
    name; the orchestrator's tables by their bare name, a participant's as schema.table."""
    sizes = {}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for qualified, schema, table, size in conn.execute(_TABLES).fetchall():
            (rows,) = conn.execute(f"SELECT count(*) FROM {qualified}").fetchone() or (0,)
            sizes[table if schema == "public" else f"{schema}.{table}"] = (int(rows), int(size))
    return sizes
