"""The load: order sagas started with `POST /sagas`, finished when their final event arrives.

A saga's end-to-end latency runs from just before its POST to the moment this process reads
its `saga.completed`, `saga.compensated` or `saga.failed` event from the events topic: what a
client that reacts to the outcome would see.

Two more ways in, started in batches (`batched`): `POST /sagas/batch` (`post_batch`) and
messages produced to the ingress topic `<namespace>.starts` (`produce_starts`); a batch's
sagas share its start time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

FINAL_EVENTS = {"saga.completed": "completed", "saga.compensated": "compensated"}
FAILED_EVENT = "saga.failed"
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"  # the payment participant declines it: the saga compensates
SKUS = [f"BENCH-{i:02d}" for i in range(16)]
BATCH_PATH = "/sagas/batch"


class StartUnavailable(Exception):
    """A way to start sagas that this build of the system does not offer (yet)."""


@dataclass(frozen=True)
class Failed:
    status: str  # http_<code>, or the reason a start was refused


# Starts a batch of sagas: per saga, its id when it started, else an outcome status.
Starter = Callable[[list[dict[str, Any]]], Awaitable[list[str | Failed]]]


@dataclass
class Outcome:
    saga_id: str
    posted_at: float  # wall clock, s
    latency_s: float | None  # None: no final event in time
    status: str  # completed | compensated | failed | http_<code> | timeout
    expected: str


@dataclass
class RunResult:
    name: str
    concurrency: int | None
    rate: float | None
    duration_s: float
    outcomes: list[Outcome] = field(default_factory=list)
    final_seen_at: dict[str, float] = field(default_factory=dict)  # saga id -> wall clock
    window: tuple[float, float] = (0.0, 0.0)  # wall clock: after the warm-up, before the drain
    # a process that measured itself, having exited before the bench could
    own_cpu_s: dict[str, float] = field(default_factory=dict)
    own_peak_rss: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Sagas finished per second inside the window: no ramp-up, no drain."""
        start, end = self.window
        inside = sum(1 for at in self.final_seen_at.values() if start <= at <= end)
        return inside / (end - start) if end > start else 0.0

    @property
    def measured(self) -> list[Outcome]:
        """The sagas started after the warm-up."""
        return [o for o in self.outcomes if o.posted_at >= self.window[0]]

    @property
    def finished(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.latency_s is not None]

    @property
    def errors(self) -> int:
        return sum(1 for o in self.outcomes if o.status != o.expected)


def order_input(rng: random.Random, compensate: bool) -> dict[str, Any]:
    return {
        "orderId": f"bench-{uuid.uuid4().hex[:12]}",
        "customerId": f"customer-{rng.randrange(10_000)}",
        "items": [{"sku": rng.choice(SKUS), "quantity": 1}],
        "amount": f"{rng.randrange(100, 50_000) / 100:.2f}",
        "currency": "EUR",
        "card": DECLINED_CARD if compensate else GOOD_CARD,
        "shippingAddress": {
            "country": "DE",
            "city": "Berlin",
            "line1": "Unter den Linden 1",
            "postalCode": "10117",
        },
    }


class Load:
    """Starts sagas through the api and hears about their outcome on the events topic."""

    def __init__(
        self,
        api_url: str,
        token: str,
        kafka: str,
        events_topic: str,
        partitions: int,
        seed: int = 11,
        saga_timeout_s: float = 60,
        ingress_topic: str | None = None,
    ) -> None:
        self._api_url = api_url
        self._ingress_topic = ingress_topic
        self._token = token
        self._kafka = kafka
        self._events_topic = events_topic
        self._partitions = partitions
        self._rng = random.Random(seed)
        self._timeout_s = saga_timeout_s
        self._waiting: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self._early: dict[str, tuple[str, float]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: asyncio.Task[None] | None = None
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            base_url=self._api_url,
            headers={"Authorization": f"Bearer {self._token}"},
            # below the server's keep-alive (uvicorn: 5 s): never reuse a connection it closes
            connector=aiohttp.TCPConnector(limit=1024, keepalive_timeout=2),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._kafka.split(","),
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
        )
        await self._consumer.start()
        self._consumer.assign(
            [TopicPartition(self._events_topic, p) for p in range(self._partitions)]
        )
        await self._consumer.seek_to_end()
        self._listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        if self._session is not None:
            await self._session.close()

    async def _listen(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            seen_at = time.time()
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value or b"{}")
                    kind = event.get("messageType")
                    status = FINAL_EVENTS.get(kind) or ("failed" if kind == FAILED_EVENT else None)
                    if status is None:
                        continue
                    saga_id = event["sagaId"]
                    waiter = self._waiting.get(saga_id)
                    if waiter is None:
                        self._early[saga_id] = (status, seen_at)
                    elif not waiter.done():
                        waiter.set_result((status, seen_at))

    async def one(self, result: RunResult, compensate: bool) -> None:
        assert self._session is not None
        expected = "compensated" if compensate else "completed"
        body = {"type": "order", "input": order_input(self._rng, compensate)}
        posted_at = time.time()
        async with self._session.post("/sagas", json=body) as response:
            if response.status != 202:
                result.outcomes.append(
                    Outcome("", posted_at, None, f"http_{response.status}", expected)
                )
                return
            saga_id = (await response.json())["id"]
        await self._finish(result, saga_id, posted_at, expected)

    async def _finish(
        self,
        result: RunResult,
        started: str | Failed,
        posted_at: float,
        expected: str,
        timeout_s: float | None = None,
    ) -> None:
        """Waits for the saga's final event and records its outcome."""
        if isinstance(started, Failed):
            result.outcomes.append(Outcome("", posted_at, None, started.status, expected))
            return
        saga_id = started
        if saga_id in self._early:
            status, seen_at = self._early.pop(saga_id)
        else:
            self._expect(saga_id)
            try:
                waiter = self._waiting[saga_id]
                status, seen_at = await asyncio.wait_for(waiter, timeout_s or self._timeout_s)
            except TimeoutError:
                result.outcomes.append(Outcome(saga_id, posted_at, None, "timeout", expected))
                return
            finally:
                self._waiting.pop(saga_id, None)
        result.final_seen_at[saga_id] = seen_at
        result.outcomes.append(Outcome(saga_id, posted_at, seen_at - posted_at, status, expected))

    def _expect(self, saga_id: str) -> None:
        """Waits for a saga's final event from now on (when its id is known before it starts)."""
        if saga_id not in self._early and saga_id not in self._waiting:
            self._waiting[saga_id] = asyncio.get_running_loop().create_future()

    def bodies(self, size: int) -> list[dict[str, Any]]:
        return [
            {"type": "order", "input": order_input(self._rng, compensate=False)}
            for _ in range(size)
        ]

    async def post_batch(self, bodies: list[dict[str, Any]]) -> list[str | Failed]:
        """`POST /sagas/batch`: one request for the whole batch."""
        assert self._session is not None
        async with self._session.post(BATCH_PATH, json={"sagas": bodies}) as response:
            if response.status in (404, 405):
                raise StartUnavailable(f"POST {BATCH_PATH} answered {response.status}")
            if response.status != 200:
                return [Failed(f"http_{response.status}")] * len(bodies)
            answer = await response.json()
        by_index = {item.get("index"): item for item in answer.get("results", [])}
        started: list[str | Failed] = []
        for index in range(len(bodies)):
            item = by_index.get(index) or {"status": "missing"}
            if item["status"] == 202 and item.get("id"):
                started.append(str(item["id"]))
            else:
                started.append(Failed(f"http_{item['status']}"))
        return started

    async def produce_starts(self, bodies: list[dict[str, Any]]) -> list[str | Failed]:
        """Messages on the ingress topic, keyed by an idempotency key, with the saga ids."""
        producer = await self._ingress_producer()
        assert self._ingress_topic is not None
        saga_ids = [str(uuid.uuid4()) for _ in bodies]
        for saga_id in saga_ids:
            self._expect(saga_id)
        sent = [
            await producer.send(
                self._ingress_topic,
                json.dumps({**body, "sagaId": saga_id}, separators=(",", ":")).encode(),
                key=f"bench-{saga_id}".encode(),
            )
            for body, saga_id in zip(bodies, saga_ids, strict=True)
        ]
        await asyncio.gather(*sent)
        return list(saga_ids)

    async def _ingress_producer(self) -> AIOKafkaProducer:
        if self._producer is not None:
            return self._producer
        if self._ingress_topic is None:
            raise StartUnavailable("no ingress topic given")
        admin = AIOKafkaAdminClient(bootstrap_servers=self._kafka.split(","))
        await admin.start()
        try:
            topics = await admin.list_topics()
        finally:
            await admin.close()
        if self._ingress_topic not in topics:
            raise StartUnavailable(f"the ingress topic {self._ingress_topic} does not exist")
        producer = AIOKafkaProducer(
            bootstrap_servers=self._kafka.split(","),
            acks="all",
            enable_idempotence=True,
            linger_ms=0,
        )
        await producer.start()
        self._producer = producer
        return producer

    async def probe_batch(self, start: Starter, size: int, timeout_s: float = 30) -> None:
        """One batch through a start path, outside any measurement: raises StartUnavailable
        when the path is missing or none of the batch's sagas finished in time."""
        result = RunResult("probe", size, None, 0)
        posted_at = time.time()
        started = await start(self.bodies(size))
        await asyncio.gather(
            *(self._finish(result, s, posted_at, "completed", timeout_s) for s in started)
        )
        if not result.finished:
            statuses = sorted({o.status for o in result.outcomes})
            raise StartUnavailable(
                f"none of {size} sagas started finished within {timeout_s:g} s ({statuses})"
            )

    async def closed_loop(
        self, name: str, concurrency: int, duration_s: float, compensate_share: float = 0.0
    ) -> RunResult:
        """`concurrency` clients, each starting its next saga when the last one finished."""
        result = RunResult(name, concurrency, None, duration_s)
        deadline = time.monotonic() + duration_s

        async def client() -> None:
            while time.monotonic() < deadline:
                await self.one(result, self._rng.random() < compensate_share)

        now = time.time()
        result.window = (now + _warmup(duration_s), now + duration_s)
        started = time.monotonic()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        result.duration_s = time.monotonic() - started
        return result

    async def batched(
        self, name: str, start: Starter, clients: int, size: int, duration_s: float
    ) -> RunResult:
        """`clients` clients, each starting a batch of `size` sagas and starting the next
        when all of them have finished: up to clients * size sagas in flight."""
        result = RunResult(name, clients * size, None, duration_s)
        deadline = time.monotonic() + duration_s

        async def client() -> None:
            while time.monotonic() < deadline:
                posted_at = time.time()
                started = await start(self.bodies(size))
                await asyncio.gather(
                    *(self._finish(result, s, posted_at, "completed") for s in started)
                )

        now = time.time()
        result.window = (now + _warmup(duration_s), now + duration_s)
        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        result.duration_s = time.monotonic() - began
        return result

    async def open_loop(
        self, name: str, rate: float, duration_s: float, compensate_share: float = 0.0
    ) -> RunResult:
        """Sagas started at a fixed rate, whether or not the earlier ones have finished."""
        result = RunResult(name, None, rate, duration_s)
        tasks = []
        now = time.time()
        result.window = (now + _warmup(duration_s), now + duration_s)
        started = time.monotonic()
        for i in range(int(rate * duration_s)):
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            compensate = self._rng.random() < compensate_share
            tasks.append(asyncio.create_task(self.one(result, compensate)))
        await asyncio.gather(*tasks)
        result.duration_s = time.monotonic() - started
        return result


def _warmup(duration_s: float) -> float:
    return min(3.0, duration_s * 0.2)
