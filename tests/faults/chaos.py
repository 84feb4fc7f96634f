"""The fault-injection suite: the whole system as processes, a mix of orders, and faults
injected while they run; then every invariant a user would check, as a table.

    python -m tests.faults.chaos --sagas 1000      (make faults SIZE=1000)
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from participants.shipping.handlers import SLOW_LANE_DELAY_S
from tests.conftest import service_urls
from tests.e2e import kafka
from tests.e2e.system import System, wait_for

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT_S = 3  # every process is a static group member (SAGA_INSTANCE_ID)
# The longest a fault may hold up a message, from the broker taking it to its consumer
# applying it; a kind not named here is reported, not bounded.
PAUSE_BOUNDS_S = {
    "SIGKILL worker, restart": 10.0,
    "SIGKILL 1 of 2 workers": 5.0,
    "SIGKILL inventory, restart": 10.0,
    "SIGKILL payment, restart": 10.0,
    "SIGKILL shipping, restart": 10.0,
    "SIGSTOP worker > session timeout": SESSION_TIMEOUT_S + 5.0,
}
SETTLE_S = 12  # between two faults: longer than any bound, so that pauses do not overlap
BROKER_DOWN_S = 60  # "one broker down" on a three-node cluster
PARTICIPANTS = ("inventory", "payment", "shipping")
MAX_COPIES_PER_BURST = 300
RECOVERY_S = 30
SKUS = ("CHAOS-A", "CHAOS-B", "CHAOS-C")
STOCK = 1_000_000
FINAL = ("completed", "compensated", "failed")

RESERVED_SQL = """
    SELECT saga_id::text, sum(quantity) FROM inventory.reservation
    WHERE status = 'reserved' GROUP BY 1"""
FAILED_WITHOUT_REASON_SQL = """
    SELECT count(*) FROM saga s WHERE s.status = 'failed' AND NOT EXISTS
    (SELECT 1 FROM saga_timeline t WHERE t.saga_id = s.id AND t.kind = 'saga_failed')"""
LEDGER_MISMATCH_SQL = """
    SELECT count(*) FROM payment.step_ledger l LEFT JOIN payment.charge c USING (saga_id)
    WHERE (l.state = 'applied' AND (c.id IS NULL OR c.status <> 'captured'))
       OR (l.state = 'compensated' AND c.status = 'captured')"""
APPLIED_TWICE_SQL = """
    SELECT count(*) FROM
    (SELECT saga_id FROM payment.charge GROUP BY 1 HAVING count(*) > 1) AS doubled"""
BEHIND_SQL = """
    SELECT count(*) FROM saga
    WHERE status IN ('running', 'compensating') AND updated_at < now() - interval '15 s'"""
NOT_FINAL_SQL = """
    SELECT count(*) FROM saga WHERE id = ANY(%s::uuid[])
    AND status NOT IN ('completed', 'compensated', 'failed')"""


@dataclasses.dataclass
class Planned:
    kind: str
    expected: str
    body: dict[str, Any]
    saga_id: str | None = None


def plan(size: int, rng: random.Random) -> list[Planned]:
    kinds = ["ok", "ok", "ok", "ok", "declined", "no_shipping", "flaky", "ok", "ok", "ok"]
    planned = []
    for i in range(size):
        # a slow step holds its participant's partition: a few of them make the point
        kind = "slow" if i % 100 == 7 else kinds[i % len(kinds)]
        card = {"declined": "4000000000000002", "flaky": "4000000000000119"}.get(
            kind, "4242424242424242"
        )
        body = {
            "orderId": f"chaos-{i}",
            "customerId": f"c-{i % 17}",
            "items": [{"sku": rng.choice(SKUS), "quantity": rng.randint(1, 3)}],
            "amount": f"{rng.randint(1, 500)}.{rng.randint(0, 99):02d}",
            "currency": "EUR",
            "card": card,
            "shippingAddress": {
                "country": "AQ" if kind == "no_shipping" else "DE",
                "city": "Berlin",
                "line1": "Slow Lane 1" if kind == "slow" else "Main St 1",
                "postalCode": "10115",
            },
        }
        expected = "compensated" if kind in ("declined", "no_shipping") else "completed"
        planned.append(Planned(kind, expected, body))
    return planned


class Faults:
    """Injects one fault after another until told to stop; counts what it did."""

    def __init__(
        self,
        system: System,
        rng: random.Random,
        services: Services | None,
        broker_down_s: float = BROKER_DOWN_S,
        only: Collection[str] = (),
    ) -> None:
        """`services` runs the services script: None when they are not this machine's.
        `only` names the faults to inject (methods of this class); every one when empty."""
        self.system = system
        self.rng = rng
        self.services = services
        self.broker_down_s = broker_down_s
        self.only = set(only)
        self.done: collections.Counter[str] = collections.Counter()
        self.started: list[tuple[float, str]] = []  # (wall clock, fault) as each began
        self._participants = itertools.cycle(PARTICIPANTS)

    def cycle(self) -> list[Callable[[], None]]:
        brokers = len(self.system.kafka.split(","))
        kafka: list[Callable[[], None]] = (
            [self.kill_leader_of_busy_partition, self.kill_one_broker]
            if brokers >= 3
            else [self.restart_kafka]
        )
        every = [
            self.kill_worker,
            self.kill_participants,
            self.duplicate_burst,
            *kafka[:1],
            self.kill_one_of_two_workers,
            self.restart_postgres,
            self.pause_worker,
            *kafka[1:],
        ]
        return [f for f in every if not self.only or f.__name__ in self.only]

    def run(self, all_started: threading.Event) -> None:
        """Inject the whole cycle of faults, again while sagas are still being started."""
        cycle = self.cycle()
        # every process has joined its group: a first fault amid the rebalances of processes
        # still starting would be charged for them
        wait_for(
            lambda: all_assigned(self.system) or None,
            180,
            "every worker and participant instance to hold partitions",
            interval_s=1,
        )
        time.sleep(SETTLE_S)
        while True:
            for fault in cycle:
                before = collections.Counter(self.done)
                began = time.time()
                fault()
                for kind in self.done - before:
                    self.started.append((began, kind))
                time.sleep(SETTLE_S + self.rng.uniform(0, 2))
                self.caught_up()
            # let the backlog drain before the next round; stop once every saga started
            if all_started.wait(RECOVERY_S):
                return

    def caught_up(self, longest_s: float = 90) -> None:
        """Wait until no saga has been still for longer than a healthy one is (the slow
        courier's 11 s), so that the next fault does not begin amid the last one's backlog.
        A saga whose timers keep firing is not still while its reply waits; longest_waits
        charges such a wait to each fault for its own part."""
        deadline = time.monotonic() + longest_s
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the database may be restarting
                if not self.system.scalar(BEHIND_SQL):
                    return
            time.sleep(1)

    def kill_worker(self) -> None:
        self.system.kill("worker")
        time.sleep(self.rng.uniform(0.5, 2))
        self.system.start("worker")
        self.done["SIGKILL worker, restart"] += 1

    def kill_one_of_two_workers(self) -> None:
        self.system.kill("worker2")
        time.sleep(self.rng.uniform(0.5, 2))
        self.system.start("worker2")
        self.done["SIGKILL 1 of 2 workers"] += 1

    def kill_participants(self) -> None:
        """One of the two instances of the next participant."""
        participant = next(self._participants)
        name = self.rng.choice((participant, f"{participant}2"))
        self.system.kill(name)
        time.sleep(self.rng.uniform(0.2, 1))
        self.system.start(name)
        self.done[f"SIGKILL {participant}, restart"] += 1

    def pause_worker(self) -> None:
        process = self.system.processes["worker"]
        process.send_signal(signal.SIGSTOP)
        time.sleep(SESSION_TIMEOUT_S + 3)  # its partitions move to worker2
        process.send_signal(signal.SIGCONT)
        self.done["SIGSTOP worker > session timeout"] += 1

    def restart_kafka(self) -> None:
        if self.services:
            self._restart("kafka", "restart Kafka broker")

    def restart_postgres(self) -> None:
        if self.services:
            self._restart("postgres", "restart PostgreSQL")

    def kill_leader_of_busy_partition(self) -> None:
        """SIGKILL the broker leading the replies partition that took the most messages, and
        start it again at once: its partitions' leadership moves, the producers and
        consumers find the new leaders, and the node catches up when it is back."""
        if self.services:
            node = asyncio.run(leader_of_busiest(self.system, f"{self.system.namespace}.replies"))
            self._broker_down(node, self.rng.uniform(1, 3), "SIGKILL leader of a busy partition")

    def kill_one_broker(self) -> None:
        if self.services:
            node = self.rng.randint(1, 3)
            self._broker_down(
                node, self.broker_down_s, f"SIGKILL one broker {self.broker_down_s:.0f} s"
            )

    def _broker_down(self, node: int, seconds: float, fault: str) -> None:
        assert self.services is not None
        if not self.services("kill-broker", str(node)):
            self.done[f"{fault} (failed)"] += 1
            return
        time.sleep(seconds)
        for _ in range(10):  # the node must come back: the next faults need three
            if self.services("start-broker", str(node)):
                self.done[fault] += 1
                return
            time.sleep(3)
        self.done[f"{fault} (failed to start again)"] += 1

    def _restart(self, server: str, fault: str) -> None:
        assert self.services is not None
        if self.services("restart", server):
            self.done[fault] += 1
            return
        # a failed restart must not leave the server down: the suite measures the
        # orchestrator, not a broken machine
        for _ in range(10):
            if self.services("start"):
                break
            time.sleep(3)
        self.done[f"{fault} (failed; started again)"] += 1

    def duplicate_burst(self) -> None:
        copies = asyncio.run(duplicate(self.system, self.rng, seconds=3))
        if copies:
            self.done["duplicate deliveries (messages)"] += copies


Services = Callable[..., bool]


def local_services(env: dict[str, str] | None = None) -> Services:
    """The services script of this checkout, with `env` (the default services: this
    process's environment without the addresses, which the script finds itself)."""
    if env is None:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SAGA_DATABASE_URL", "SAGA_KAFKA_BOOTSTRAP_SERVERS")
        }
        if len(service_urls()[1].split(",")) >= 3:
            env.setdefault("SAGA_KAFKA_BROKERS", "3")

    def services(*args: str) -> bool:
        result = subprocess.run(
            [str(ROOT / "deploy/local/services"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return result.returncode == 0

    return services


def all_assigned(system: System) -> bool:
    """Whether each worker and participant instance holds partitions of the topic it
    consumes, by the last `partitions_assigned` in its log: both members of every group
    have joined it."""
    topics = {"worker": "replies", **{p: f"{p}.commands" for p in PARTICIPANTS}}
    for kind, topic in topics.items():
        for name in (kind, f"{kind}2"):
            log = system.workdir / f"{name}.log"
            last: list[int] = []
            with contextlib.suppress(FileNotFoundError), log.open() as lines:
                for line in lines:
                    if '"partitions_assigned"' in line:
                        with contextlib.suppress(ValueError):
                            event = json.loads(line)
                            if event.get("topic", "").endswith(f".{topic}"):
                                last = event.get("partitions") or []
            if not last:
                return False
    return True


async def leader_of_busiest(system: System, topic: str) -> int:
    """The node leading the partition of `topic` with the most messages."""
    admin = AIOKafkaAdminClient(bootstrap_servers=system.kafka.split(","))
    consumer = AIOKafkaConsumer(bootstrap_servers=system.kafka.split(","))
    await admin.start()
    await consumer.start()
    try:
        (described,) = await admin.describe_topics([topic])
        leaders = {p["partition"]: p["leader"] for p in described["partitions"]}
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in leaders])
        busiest = max(ends, key=lambda tp: ends[tp])
        return int(leaders[busiest.partition])
    finally:
        await consumer.stop()
        await admin.close()


async def duplicate(system: System, rng: random.Random, seconds: float) -> int:
    """Re-publish copies of the replies and commands flowing by: at-least-once, made visible."""
    ns = system.namespace
    topics = [
        f"{ns}.replies",
        f"{ns}.inventory.commands",
        f"{ns}.payment.commands",
        f"{ns}.shipping.commands",
    ]
    servers = system.kafka.split(",")
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    copies = 0
    try:
        await consumer.start()
        await producer.start()
        await consumer._client.set_topics(topics)  # loads their partitions; no public way
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and copies < MAX_COPIES_PER_BURST:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    if rng.random() < 0.3:
                        await producer.send_and_wait(
                            tp.topic, r.value, key=r.key, headers=list(r.headers)
                        )
                        copies += 1
    except Exception as exc:  # the broker may be restarting: fewer copies this time
        print(f"duplicate burst cut short: {exc!r}", file=sys.stderr)
    finally:
        await producer.stop()
        await consumer.stop()
    return copies


def start_sagas(system: System, planned: list[Planned], rate: float) -> None:
    """Start the sagas `rate` a second, on a schedule: a slow answer or a retry delays the
    next start, not the rest."""
    began = time.monotonic()
    for i, p in enumerate(planned):
        time.sleep(max(0.0, began + i / rate - time.monotonic()))
        key = {"Idempotency-Key": p.body["orderId"]}
        body = {"type": "order_chaos", "input": p.body}
        for _ in range(600):  # the api may be without its database for a moment
            try:
                response = system.api.post("/sagas", json=body, headers=key)
                if response.status_code in (200, 202):
                    p.saga_id = response.json()["id"]
                    break
            except Exception:  # retried with the same idempotency key
                pass
            time.sleep(0.5)


@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    detail: str
    enforced: bool = True  # False: reported only, INFO in the table


def check(system: System, planned: list[Planned]) -> tuple[dict[str, int], list[Check]]:
    ids = [p.saga_id for p in planned if p.saga_id]
    with system.sql() as db:
        status = dict(
            db.execute(
                "SELECT id::text, status FROM saga WHERE id = ANY(%s::uuid[])", (ids,)
            ).fetchall()
        )
        reserved = dict(db.execute(RESERVED_SQL).fetchall())
        captured = dict(
            db.execute(
                "SELECT saga_id::text, amount FROM payment.charge WHERE status = 'captured'"
            ).fetchall()
        )
        shipped = {
            r[0]
            for r in db.execute(
                "SELECT saga_id::text FROM shipping.shipment WHERE status = 'created'"
            )
        }
        stock = dict(
            db.execute(
                "SELECT sku, quantity FROM inventory.stock WHERE sku = ANY(%s)", (list(SKUS),)
            ).fetchall()
        )
        unpublished = db.execute(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        ).fetchone()[0]
        failed_without_reason = db.execute(FAILED_WITHOUT_REASON_SQL).fetchone()[0]
        ledger_mismatch = db.execute(LEDGER_MISMATCH_SQL).fetchone()[0]
        applied_twice = db.execute(APPLIED_TWICE_SQL).fetchone()[0]
    counts = collections.Counter(status.get(i, "missing") for i in ids)
    completed = [p for p in planned if status.get(p.saga_id or "") == "completed"]
    compensated = [i for i in ids if status.get(i) == "compensated"]
    taken: collections.Counter[str] = collections.Counter()
    for p in completed:
        taken[p.body["items"][0]["sku"]] += p.body["items"][0]["quantity"]
    missing_effect = [
        p.saga_id
        for p in completed
        if not (p.saga_id in reserved and p.saga_id in captured and p.saga_id in shipped)
    ]
    left_behind = [i for i in compensated if i in reserved or i in captured or i in shipped]
    charged = sum((captured.get(p.saga_id or "", Decimal(0)) for p in completed), Decimal(0))
    expected_charged = sum((Decimal(p.body["amount"]) for p in completed), Decimal(0))
    unexpected = sum(1 for p in planned if status.get(p.saga_id or "") not in (p.expected, None))
    checks = [
        Check("every saga started", len(ids) == len(planned), f"{len(ids)}/{len(planned)}"),
        Check(
            "every saga final (failed only with a reason)",
            not (set(counts) - set(FINAL)) and failed_without_reason == 0,
            dict(counts).__repr__(),
        ),
        Check(
            "no completed saga misses an effect",
            not missing_effect,
            f"{len(missing_effect)} missing",
        ),
        Check("no compensated saga left an effect", not left_behind, f"{len(left_behind)} left"),
        Check(
            "each charge applied at most once",
            applied_twice == 0 and ledger_mismatch == 0,
            f"{applied_twice} doubled, {ledger_mismatch} ledger mismatches",
        ),
        Check(
            "stock reconciles exactly",
            all(stock[s] == STOCK - taken[s] for s in SKUS),
            f"taken {dict(taken)}, left {stock}",
        ),
        Check(
            "charges reconcile exactly",
            charged == expected_charged and len(captured.keys() & set(ids)) == len(completed),
            f"{charged} charged for {len(completed)} completed",
        ),
        Check("no outbox row left unpublished", unpublished == 0, f"{unpublished} unpublished"),
    ]
    summary = {**counts, "unexpected outcome (allowed)": unexpected}
    return summary, checks


def run(
    size: int,
    seed: int = 7,
    rate: float = 4.0,
    workdir: Path | None = None,
    pause_bounds: bool = True,
    kafka: str | None = None,
    services: Services | None = None,
    broker_down_s: float = BROKER_DOWN_S,
    only: Collection[str] = (),
) -> bool:
    """Whether every check passed; with `pause_bounds` False the pauses are reported but a
    pause past its bound fails nothing (a timing, on a machine others may load). `kafka` and
    `services`: another cluster than the default services, and the script that runs it.
    Every message's wait and every fault's start are written to `workdir` (waits.tsv,
    faults.tsv) for a pause past its bound to be looked into."""
    database_url, default_kafka = service_urls()
    kafka = kafka or default_kafka
    rng = random.Random(seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    system = System(database_url, kafka, workdir, definitions="tests.faults.sagas")
    system.env["SAGA_CONSUMER_SESSION_TIMEOUT_S"] = str(SESSION_TIMEOUT_S)
    if len(kafka.split(",")) >= 3:
        system.env["SAGA_TOPIC_REPLICATION"] = "3"
    if services is None and not os.environ.get("SAGA_EXTERNAL_SERVICES"):
        services = local_services()
    began = time.monotonic()
    system.create_database()
    try:
        for sku in SKUS:
            system.restock(sku, STOCK)
        system.start_all()
        system.start("worker2", "orchestrator", "worker", env={"SAGA_WORKER_METRICS_PORT": "0"})
        for participant in PARTICIPANTS:  # two of everything
            system.start(f"{participant}2", "participants", "worker", participant)
        planned = plan(size, rng)
        faults = Faults(system, rng, services, broker_down_s, only)
        all_started = threading.Event()
        injector = threading.Thread(target=faults.run, args=(all_started,))
        injector.start()
        try:
            start_sagas(system, planned, rate)
        finally:
            all_started.set()
            injector.join()
        for name in ("worker", "worker2", *PARTICIPANTS, *(f"{p}2" for p in PARTICIPANTS)):
            if system.processes[name].poll() is not None:
                system.start(name)
        ids = [p.saga_id for p in planned if p.saga_id]
        wait_for(lambda: _all_final(system, ids), 600, "every saga to finish", interval_s=2)
        wait_for(
            lambda: (
                system.scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
                or None
            ),
            120,
            "the outbox to drain",
            interval_s=1,
        )
        summary, checks = check(system, planned)
        slow = {p.saga_id for p in planned if p.kind == "slow" and p.saga_id}
        longest = pauses(system, faults.started, slow, workdir)
        over = {k: round(v, 1) for k, v in longest.items() if v > PAUSE_BOUNDS_S.get(k, math.inf)}
        checks.append(
            Check(
                "no fault paused its messages past its bound",
                not over or not pause_bounds,
                f"over: {over}" if over else "within bounds",
                enforced=pause_bounds,
            )
        )
    finally:
        system.stop_all()
        system.delete_topics()
        system.drop_database()
    elapsed = time.monotonic() - began
    print(report(size, summary, faults.done, checks, elapsed, longest))
    print(f"processes' logs, waits.tsv and faults.tsv: {workdir}")
    return all(c.ok for c in checks)


def pauses(
    system: System,
    started: list[tuple[float, str]],
    slow_sagas: set[str],
    workdir: Path | None = None,
) -> dict[str, float]:
    """Per fault kind, the longest a message waited between the broker taking it and its
    consumer applying it (a reply by a worker, a command by its participant), counting the
    part of each wait that passed while that fault was the latest one begun, on the consumer
    it stopped (longest_waits).
    Commands held up by the slow courier the suite asks for on purpose are not a fault's
    (see held_by_slow)."""
    ns = system.namespace
    topics = [f"{ns}.replies", *(f"{ns}.{p}.commands" for p in PARTICIPANTS)]
    appended = kafka.appended_where(system, topics)
    with system.sql() as db:
        applied = db.execute(
            "SELECT message_id::text, extract(epoch FROM at)::float8, 'worker' "
            "FROM saga_timeline WHERE kind = 'reply_received'"
        ).fetchall()
        for p in PARTICIPANTS:
            applied += db.execute(
                "SELECT message_id::text, extract(epoch FROM received_at)::float8, "
                f"'{p}' FROM {p}.inbox"
            ).fetchall()
        shipping = db.execute(
            "SELECT message_id::text, saga_id::text, extract(epoch FROM received_at)::float8 "
            "FROM shipping.inbox"
        ).fetchall()
    held = held_by_slow(shipping, appended, slow_sagas)
    counted = [
        (message_id, at, consumer)
        for message_id, at, consumer in applied
        if message_id in appended and message_id not in held
    ]
    if workdir:
        with (workdir / "waits.tsv").open("w") as f:
            f.write("appended\tapplied\tconsumer\tpartition\tmessage_id\n")
            for message_id, at, consumer in counted:
                taken, partition = appended[message_id]
                f.write(f"{taken:.3f}\t{at:.3f}\t{consumer}\t{partition}\t{message_id}\n")
        with (workdir / "faults.tsv").open("w") as f:
            f.writelines(f"{began:.3f}\t{kind}\n" for began, kind in sorted(started))
    waits = [(appended[message_id][0], at, consumer) for message_id, at, consumer in counted]
    return longest_waits(waits, started)


def stopped_by(fault: str) -> str | None:
    """The consumer a fault stops: a worker's or a participant's (by the name in the
    fault's), or None for one that stops them all (the broker, the database, copies)."""
    for consumer in ("worker", *PARTICIPANTS):
        if consumer in fault:
            return consumer
    return None


def longest_waits(
    waits: list[tuple[float, float, str]], started: list[tuple[float, str]]
) -> dict[str, float]:
    """Per fault kind, the longest part of a wait (appended, applied, consumer) that passed
    while that fault was the latest one begun: a message held up by one fault and applied
    after the next began counts against each for its own part. A kind under which no
    message it could hold up was applied (a last fault after the last saga) is left out:
    it measured nothing. A fault that stops one consumer is charged for that consumer's
    messages only: a worker's SIGKILL does not hold up a command the shipping service is
    busy with."""
    began = sorted(started)
    times = [t for t, _ in began]
    longest: dict[str, float] = {}
    for appended, applied, consumer in waits:
        end = applied
        i = bisect.bisect_right(times, applied) - 1
        while i >= 0:
            kind = began[i][1]
            if stopped_by(kind) in (None, consumer):
                longest[kind] = max(longest.get(kind, 0.0), end - max(appended, times[i]))
            if times[i] <= appended:
                break
            end, i = times[i], i - 1
    return longest


def held_by_slow(
    shipping: list[tuple[str, str, float]],
    appended: dict[str, tuple[float, int]],
    slow_sagas: set[str],
) -> set[str]:
    """The shipping commands that waited behind the first attempt of a slow saga: its handler
    sleeps SLOW_LANE_DELAY_S inside its transaction, which holds the partitions of every
    command in that transaction (they share its start time, the inbox's received_at) until
    it commits; the commands of those partitions applied in it or within that time after
    it waited for it (after a crash mid-sleep, the backlog it held comes in its batch)."""
    first_attempt: dict[str, float] = {}
    for _, saga_id, at in shipping:
        if saga_id in slow_sagas:
            first_attempt[saga_id] = min(first_attempt.get(saga_id, math.inf), at)
    by_start: collections.defaultdict[float, set[int]] = collections.defaultdict(set)
    for message_id, _, at in shipping:
        if message_id in appended:
            by_start[at].add(appended[message_id][1])
    held = set()
    for slow_at in first_attempt.values():
        partitions = by_start[slow_at]
        for message_id, _, at in shipping:
            in_time = slow_at <= at <= slow_at + SLOW_LANE_DELAY_S + 2  # its own too
            if in_time and message_id in appended and appended[message_id][1] in partitions:
                held.add(message_id)
    return held


def _all_final(system: System, ids: list[str]) -> bool | None:
    n = system.scalar(
        NOT_FINAL_SQL,
        ids,
    )
    return n == 0 or None


def report(
    size: int,
    summary: dict[str, int],
    faults: collections.Counter[str],
    checks: list[Check],
    elapsed: float,
    longest: dict[str, float],
) -> str:
    lines = [
        f"fault-injection suite: {size} sagas in {elapsed:.0f} s",
        "",
        f"{'outcome':<40} {'sagas':>6}",
    ]
    lines += [f"{k:<40} {v:>6}" for k, v in summary.items()]
    lines += ["", f"{'fault injected':<40} {'times':>6} {'longest pause s':>16} {'bound s':>8}"]
    for k, v in sorted(faults.items()):
        pause = f"{longest[k]:.1f}" if k in longest else "none applied"
        bound = f"{PAUSE_BOUNDS_S[k]:.0f}" if k in PAUSE_BOUNDS_S else "-"
        lines.append(f"{k:<40} {v:>6} {pause:>16} {bound:>8}")
    lines += ["", f"{'check':<48} {'result':<6} detail"]
    lines += [f"{c.name:<48} {_verdict(c):<6} {c.detail}" for c in checks]
    return "\n".join(lines)


def _verdict(check: Check) -> str:
    if not check.enforced:
        return "INFO"
    return "PASS" if check.ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sagas", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=4.0, help="sagas started per second")
    parser.add_argument(
        "--broker-down-s", type=float, default=BROKER_DOWN_S, help="one broker down this long"
    )
    parser.add_argument(
        "--enforce-pauses",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fail when a fault paused messages past its bound (reported either way)",
    )
    parser.add_argument(
        "--faults",
        default="",
        help="only these faults, comma-separated method names of Faults (e.g. pause_worker)",
    )
    args = parser.parse_args()
    ok = run(
        args.sagas,
        args.seed,
        args.rate,
        pause_bounds=args.enforce_pauses,
        broker_down_s=args.broker_down_s,
        only=[f for f in args.faults.split(",") if f],
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
