"""The floor: the order saga's message pattern and commits, with no orchestration logic.

The same clients with the same durability settings as the orchestrator (the orchestrator's
own idempotent, acks=all `Publisher`, aiokafka consumers committing offsets after the
database, psycopg with synchronous commits): per saga, one commit to start it, then three
command/reply round trips through Kafka, a commit at the participant for each command and a
commit at the coordinator for each reply, and a started and a final event. Like the
orchestrator, each process handles what one fetch returned in one transaction.

    python -m bench.floor setup        --dsn D
    python -m bench.floor participant  --dsn D --kafka K --namespace N NAME
    python -m bench.floor coordinator  --dsn D --kafka K --namespace N --concurrency C --duration S
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.load import SKUS, Outcome, RunResult, order_input
from orchestrator.transport.producer import Publisher, Record

STEPS = ("inventory", "payment", "shipping")
PARTITIONS = 8

SCHEMA = """
CREATE TABLE IF NOT EXISTS floor_saga (id uuid PRIMARY KEY, step int NOT NULL,
    status text NOT NULL, input jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS floor_processed (message_id uuid PRIMARY KEY, saga_id uuid NOT NULL);
CREATE TABLE IF NOT EXISTS floor_inbox (participant text NOT NULL, message_id uuid NOT NULL,
    saga_id uuid NOT NULL, reply bytea NOT NULL, PRIMARY KEY (participant, message_id));
"""


def topic(namespace: str, name: str) -> str:
    return f"{namespace}.{name}.commands" if name in STEPS else f"{namespace}.{name}"


def envelope(saga_id: str, kind: str, message_type: str, step: int, cause: str) -> dict[str, Any]:
    return {
        "messageId": str(uuid.uuid4()),
        "messageType": message_type,
        "version": 1,
        "kind": kind,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "sagaId": saga_id,
        "sagaType": "floor",
        "step": str(step),
        "attempt": 1,
        "correlationId": saga_id,
        "causationId": cause,
        "source": "floor",
        "payload": {},
    }


def record(namespace: str, channel: str, message: dict[str, Any]) -> Record:
    value = json.dumps(message, separators=(",", ":")).encode()
    return Record(topic(namespace, channel), message["sagaId"], value, [])


async def consumer_of(kafka: str, topic_name: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=kafka.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    return consumer


async def batches(consumer: AIOKafkaConsumer) -> AsyncIterator[list[dict[str, Any]]]:
    """What each fetch returned, decoded: the unit of one transaction."""
    while True:
        fetched = await consumer.getmany(timeout_ms=1000)
        decoded = [json.loads(r.value) for records in fetched.values() for r in records]
        if decoded:
            yield decoded


async def participant(args: argparse.Namespace) -> None:
    publisher = Publisher(args.kafka, f"floor-{args.name}")
    await publisher.start()
    consumer = await consumer_of(
        args.kafka, topic(args.namespace, args.name), f"{args.namespace}-{args.name}"
    )
    async with await psycopg.AsyncConnection.connect(args.dsn) as conn:
        async for commands in batches(consumer):
            replies = []
            async with conn.transaction(), conn.cursor() as cur:
                for command in commands:
                    reply = envelope(
                        command["sagaId"],
                        "reply",
                        command["messageType"] + ".reply",
                        int(command["step"]),
                        command["messageId"],
                    )
                    replies.append(reply)
                await cur.executemany(
                    "INSERT INTO floor_inbox VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [
                        (args.name, c["messageId"], c["sagaId"], json.dumps(r).encode())
                        for c, r in zip(commands, replies, strict=True)
                    ],
                )
            await publisher.publish([record(args.namespace, "replies", r) for r in replies])
            await consumer.commit()


class Coordinator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.publisher = Publisher(args.kafka, "floor-coordinator")
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.rng = random.Random(5)

    async def run(self) -> RunResult:
        await self.publisher.start()
        replies = await consumer_of(
            self.args.kafka, topic(self.args.namespace, "replies"), f"{self.args.namespace}-coord"
        )
        events = AIOKafkaConsumer(
            bootstrap_servers=self.args.kafka.split(","),
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await events.start()
        events_topic = topic(self.args.namespace, "events")
        events.assign([TopicPartition(events_topic, p) for p in range(PARTITIONS)])
        await events.seek_to_end()
        start_conn = await psycopg.AsyncConnection.connect(self.args.dsn, autocommit=True)
        reply_conn = await psycopg.AsyncConnection.connect(self.args.dsn)
        loops = [
            asyncio.create_task(self.handle_replies(replies, reply_conn)),
            asyncio.create_task(self.listen(events)),
        ]
        result = RunResult("floor", self.args.concurrency, None, self.args.duration)
        pool = await _pool(self.args.dsn, self.args.concurrency)
        try:
            await self.closed_loop(result, pool)
        finally:
            for loop in loops:
                loop.cancel()
            await self.publisher.stop()
            await replies.stop()
            await events.stop()
            await start_conn.close()
            await reply_conn.close()
            for conn in pool:
                await conn.close()
        return result

    async def closed_loop(self, result: RunResult, pool: list[psycopg.AsyncConnection]) -> None:
        duration = self.args.duration
        now = time.time()
        result.window = (now + min(3.0, duration * 0.2), now + duration)
        deadline = time.monotonic() + duration

        async def client(conn: psycopg.AsyncConnection) -> None:
            while time.monotonic() < deadline:
                await self.one(result, conn)

        started = time.monotonic()
        await asyncio.gather(*(client(conn) for conn in pool))
        result.duration_s = time.monotonic() - started

    async def one(self, result: RunResult, conn: psycopg.AsyncConnection) -> None:
        saga_id = str(uuid.uuid4())
        posted_at = time.time()
        saga_input = order_input(self.rng, compensate=False)
        await conn.execute(
            "INSERT INTO floor_saga (id, step, status, input) VALUES (%s, 0, 'running', %s)",
            (saga_id, json.dumps(saga_input)),
        )
        waiter = asyncio.get_running_loop().create_future()
        self.waiting[saga_id] = waiter
        started = envelope(saga_id, "event", "saga.started", 0, "")
        command = envelope(saga_id, "command", "inventory.reserve", 0, started["messageId"])
        command["payload"] = {"items": saga_input["items"], "sku": random.choice(SKUS)}
        await self.publisher.publish(
            [
                record(self.args.namespace, "events", started),
                record(self.args.namespace, STEPS[0], command),
            ]
        )
        seen_at = await waiter
        result.final_seen_at[saga_id] = seen_at
        result.outcomes.append(
            Outcome(saga_id, posted_at, seen_at - posted_at, "completed", "completed")
        )

    async def handle_replies(
        self, consumer: AIOKafkaConsumer, conn: psycopg.AsyncConnection
    ) -> None:
        async for replies in batches(consumer):
            outgoing = []
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO floor_processed VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    [(r["messageId"], r["sagaId"]) for r in replies],
                )
                await cur.executemany(
                    "UPDATE floor_saga SET step = %s, updated_at = now() WHERE id = %s",
                    [(int(r["step"]) + 1, r["sagaId"]) for r in replies],
                )
                for reply in replies:
                    step = int(reply["step"]) + 1
                    if step < len(STEPS):
                        message = envelope(
                            reply["sagaId"], "command", STEPS[step], step, reply["messageId"]
                        )
                        outgoing.append(record(self.args.namespace, STEPS[step], message))
                    else:
                        message = envelope(
                            reply["sagaId"], "event", "saga.completed", step, reply["messageId"]
                        )
                        outgoing.append(record(self.args.namespace, "events", message))
            await self.publisher.publish(outgoing)
            await consumer.commit()

    async def listen(self, events: AIOKafkaConsumer) -> None:
        while True:
            batch = await events.getmany(timeout_ms=200)
            seen_at = time.time()
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value)
                    if event["messageType"] == "saga.completed":
                        waiter = self.waiting.pop(event["sagaId"], None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(seen_at)


async def _pool(dsn: str, size: int) -> list[psycopg.AsyncConnection]:
    # one connection per client, as the api's pool gives each request its own
    return [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(size)]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("role", choices=("setup", "participant", "coordinator"))
    parser.add_argument("name", nargs="?")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--kafka")
    parser.add_argument("--namespace")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.role == "setup":
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)
    elif args.role == "participant":
        asyncio.run(participant(args))
    else:
        result = asyncio.run(Coordinator(args).run())
        with open(args.out, "w") as out:
            json.dump(
                {
                    "window": result.window,
                    "duration_s": result.duration_s,
                    "final_seen_at": result.final_seen_at,
                    "outcomes": [o.__dict__ for o in result.outcomes],
                    "cpu_s": time.process_time(),
                    "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                },
                out,
            )


if __name__ == "__main__":
    main()
