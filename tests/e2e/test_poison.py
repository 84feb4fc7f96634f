"""The poison suite: one bad message never stalls anything else.

While fifty orders run, records no consumer can apply are published onto the replies topic
and onto every participant's command topic: JSON nested too deep to parse, numbers too large
for an integer, NUL characters PostgreSQL refuses to store, noise, truncated JSON, ids that
are no UUIDs. Every order must still end as it would have without them, every poison record
must be in its topic's dead-letter topic with the reason and where it came from, the
consumer groups must commit past it, and no consumer may have crashed or restarted.

The suite runs a system of its own, so that the process logs it reads hold its activity only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.settings import Settings
from orchestrator.transport import dead_letters
from participants import registry
from tests.conftest import service_urls
from tests.e2e.kafka import first
from tests.e2e.orders import DECLINED_CARD, new_sku, order
from tests.e2e.system import System, signature, wait_for
from tests.e2e.test_dead_letters import reply_like

pytestmark = pytest.mark.e2e

ORDERS = 50
DECLINED_EVERY = 5  # one order in five pays with the declined card: 40 complete, 10 compensate
DEPTH = 100_000
NUL_STEP = "reserve\x00inventory"  # json.dumps writes the NUL as the escape \u0000
# Bounds of the waits, together well under the suite's time budget. The orders get less
# time than their steps' 30 s timeout: an order that only a timeout saved was stalled.
SAGAS_TIMEOUT_S = 20.0
LETTERS_TIMEOUT_S = 10.0
OFFSETS_TIMEOUT_S = 10.0
# What faust logs when an agent raises: the actor is marked crashed and replaced.
AGENT_CRASHED = re.compile(r"crashed", re.IGNORECASE)
ESCAPED_ERRORS = re.compile(r"RecursionError|OverflowError|DataError")
TIMED_OUT = {"step_timed_out", "compensation_timed_out"}
STOP_GRACE_S = 10.0


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """A system of this module's own: its logs show what the poison did and nothing else."""
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("poison")
    with System(database_url, kafka, workdir).running() as system:
        yield system


# -- publishing, reading back ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Record:
    """A record to publish, keyed by a real saga."""

    what: str
    topic: str
    key: str  # a saga id
    value: bytes
    signed_by: str | None = None  # the sender whose test key signs it


@dataclasses.dataclass(frozen=True)
class Sent:
    """A poison record and where the broker put it."""

    what: str
    topic: str
    partition: int
    offset: int
    value: bytes

    def __str__(self) -> str:
        return f"{self.what} at {self.topic}[{self.partition}]@{self.offset}"


async def _send(kafka: str, records: Sequence[Record]) -> list[Sent]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.split(","), acks="all")
    await producer.start()
    try:
        sent = []
        for r in records:
            headers = [signature(r.value, r.signed_by)] if r.signed_by else []
            meta = await producer.send_and_wait(
                r.topic, r.value, key=r.key.encode(), headers=headers
            )
            sent.append(Sent(r.what, r.topic, meta.partition, meta.offset, r.value))
        return sent
    finally:
        await producer.stop()


def publish(system: System, records: Sequence[Record]) -> list[Sent]:
    """Publish in order; return each record's partition and offset."""
    return asyncio.run(_send(system.kafka, records))


async def _all_letters(
    kafka: str, topics: Sequence[str]
) -> dict[str, list[dead_letters.DeadLetter]]:
    found = await asyncio.gather(*(dead_letters.read(kafka, t) for t in topics))
    return dict(zip(topics, found, strict=True))


def letters_of(system: System, topics: Sequence[str]) -> dict[str, list[dead_letters.DeadLetter]]:
    """The dead letters of each topic (read from `<topic>.dlq`)."""
    return asyncio.run(_all_letters(system.kafka, topics))


def letter_for(
    sent: Sent, letters: dict[str, list[dead_letters.DeadLetter]]
) -> dead_letters.DeadLetter | None:
    """The dead letter that says it came from where `sent` was published."""
    return next(
        (
            d
            for d in letters.get(sent.topic, [])
            if d.original_topic == sent.topic
            and d.headers.get("original_partition") == str(sent.partition)
            and d.headers.get("original_offset") == str(sent.offset)
        ),
        None,
    )


def group_of(system: System, topic: str) -> str:
    """The consumer group that reads `topic`: the worker's, or a participant's."""
    if topic == f"{system.namespace}.replies":
        return f"{system.namespace}-orchestrator"
    participant = topic.removeprefix(f"{system.namespace}.").removesuffix(".commands")
    return f"{system.namespace}-participant-{participant}"


async def _committed(kafka: str, groups: Sequence[str]) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.split(","))
    await admin.start()
    try:
        committed: dict[tuple[str, int], int] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed |= {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
        return committed
    finally:
        await admin.close()


def committed_offsets(system: System, topics: Sequence[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset its consumer group committed."""
    groups = sorted({group_of(system, t) for t in topics})
    return asyncio.run(_committed(system.kafka, groups))


def not_passed(sent: Sequence[Sent], committed: dict[tuple[str, int], int]) -> list[Sent]:
    return [s for s in sent if committed.get((s.topic, s.partition), -1) <= s.offset]


def unhandled_errors(log: str) -> list[str]:
    """Lines that tell of an error nothing handled: a traceback, a crashed agent, or one of
    the errors the poison provokes printed outside a structured log record."""
    return [
        line[:300]
        for line in log.splitlines()
        if "Traceback" in line
        or AGENT_CRASHED.search(line)
        or (ESCAPED_ERRORS.search(line) and not line.lstrip().startswith("{"))
    ]


# -- the poison -----------------------------------------------------------------------------


def with_raw(envelope: bytes, field: str, raw: bytes) -> bytes:
    """The envelope with the value of `field` replaced by raw JSON text."""
    marker = b'"@@raw@@"'
    data = json.loads(envelope)
    data[field] = "@@raw@@"
    return json.dumps(data).encode().replace(marker, raw)


def poison_for(topic: str, command_type: str | None, saga_ids: Sequence[str]) -> list[Record]:
    """The poison for one topic, each record keyed by a real saga (and naming it, when it
    names one); five sagas, so that the poison lands on several partitions.

    `command_type` is None for the replies topic; for a command topic it is a command the
    participant handles, so that the record with the NUL step gets past the type check.
    """
    a, b, c, d, e = saga_ids[:5]
    if command_type is None:
        nul_step = reply_like(d, step=NUL_STEP)
    else:
        nul_step = reply_like(
            d,
            kind="command",
            messageType=command_type,
            source="orchestrator",
            step=NUL_STEP,
            payload={"orderId": "o-poison"},
        )
    noise = b"\xff\xfe" + random.Random(topic).randbytes(62)
    records = [
        ("nested 100,000 deep (arrays)", a, b"[" * DEPTH + b"]" * DEPTH),
        ("nested 100,000 deep (objects)", b, b'{"a":' * DEPTH + b"1" + b"}" * DEPTH),
        ("attempt 1e999", c, with_raw(reply_like(c), "attempt", b"1e999")),
        ("NUL in the step", d, nul_step),
        ("random bytes", e, noise),
        ("truncated JSON", a, reply_like(a)[:57]),
        ("messageId not a UUID", b, reply_like(b, messageId="not-a-uuid")),
    ]
    return [Record(what, topic, key, value) for what, key, value in records]


def command_types(system: System) -> dict[str, str]:
    """participant -> a command it handles."""
    settings = Settings(
        database_url=system.database_url,
        kafka_bootstrap_servers=system.kafka,
        topic_namespace=system.namespace,
    )
    return {
        name: next(iter(registry.participant(name, settings).actions))
        for name in registry.shipped_names()
    }


# -- the run --------------------------------------------------------------------------------


@dataclasses.dataclass
class Aftermath:
    """What a user finds once the orders ran with the poison among them."""

    expected: dict[str, str]  # saga id -> the status it must end with
    final: dict[str, str]  # saga id -> the status it ended with (or had at the deadline)
    timed_out: dict[str, list[str]]  # saga id -> the steps whose deadline passed
    poison: list[Sent]
    letters: dict[str, list[dead_letters.DeadLetter]]
    committed: dict[tuple[str, int], int]
    logs: dict[str, str]  # process -> its log
    exited: dict[str, int | None]  # process -> exit code, for those no longer running


@pytest.fixture(scope="module")
def aftermath(system: System) -> Aftermath:
    """Run the orders with the poison among them, and gather what a user would look at.
    Every wait is bounded, and nothing is asserted here: the tests below judge."""
    ns = system.namespace
    replies = f"{ns}.replies"
    topics = [replies, *(f"{ns}.{p}.commands" for p in registry.shipped_names())]
    sku = new_sku(system, 10 * ORDERS)
    expected: dict[str, str] = {}

    # A reply whose NUL would reach PostgreSQL only when applied: a success for a step in
    # flight (a late one would merely be ignored). Payment is stopped so that the step waits,
    # and the poison is on the replies topic before payment's own reply (same key, so same
    # partition: the worker reads the poison first).
    system.stop("payment", timeout_s=STOP_GRACE_S / 2)
    try:
        victim = system.start_saga(order(sku), version=1)
        expected[victim] = "completed"
        charge = codec.decode(first(system, f"{ns}.payment.commands", victim, timeout_s=15))
        nul_data = messages.reply_to(
            charge,
            source="payment",
            outcome=messages.Outcome.SUCCESS,
            now=datetime.now(UTC),
            data={"chargeId": "ch_\x00_poison"},
        )
        nul_data_records = [
            Record("NUL in the data", t, victim, codec.encode(nul_data)) for t in topics
        ]
        sent = publish(system, nul_data_records[:1])
    finally:
        system.start("payment")

    kinds = command_types(system)
    for i in range(1, ORDERS):
        declined = i % DECLINED_EVERY == DECLINED_EVERY - 1
        saga_id = system.start_saga(
            order(sku, card=DECLINED_CARD) if declined else order(sku), version=1
        )
        expected[saga_id] = "compensated" if declined else "completed"
        if i == ORDERS // 2:  # half of the orders are under way: in goes the poison
            running = list(expected)[1:]
            records = poison_for(replies, None, running)
            for name in registry.shipped_names():
                records += poison_for(f"{ns}.{name}.commands", kinds[name], running)
            sent += publish(system, [*records, *nul_data_records[1:]])

    final: dict[str, str] = {}
    timed_out: dict[str, list[str]] = {}
    deadline = time.monotonic() + SAGAS_TIMEOUT_S
    for saga_id in expected:
        try:
            remaining = deadline - time.monotonic()
            saga = system.wait_final(saga_id, remaining) if remaining > 0 else system.saga(saga_id)
        except TimeoutError:
            saga = system.saga(saga_id)
        final[saga_id] = saga["status"]
        timed_out[saga_id] = [e["step"] for e in saga["timeline"] if e["kind"] in TIMED_OUT]

    def all_dead_lettered() -> bool:
        letters = letters_of(system, topics)
        return all(letter_for(s, letters) for s in sent)

    def all_passed() -> bool:
        return not not_passed(sent, committed_offsets(system, topics))

    # Bounded: on a timeout, what there is at the deadline is what the tests judge.
    with contextlib.suppress(TimeoutError):
        wait_for(all_dead_lettered, LETTERS_TIMEOUT_S, "the dead letters", interval_s=0.5)
    letters = letters_of(system, topics)
    with contextlib.suppress(TimeoutError):
        wait_for(all_passed, OFFSETS_TIMEOUT_S, "the commits past the poison", interval_s=0.5)
    committed = committed_offsets(system, topics)

    watched = ["worker", *registry.shipped_names()]
    return Aftermath(
        expected=expected,
        final=final,
        timed_out={saga_id: steps for saga_id, steps in timed_out.items() if steps},
        poison=sent,
        letters=letters,
        committed=committed,
        logs={n: (system.workdir / f"{n}.log").read_text(errors="replace") for n in watched},
        exited={n: p.poll() for n, p in system.processes.items() if p.poll() is not None},
    )


# -- what a user checks ---------------------------------------------------------------------


def test_every_order_ends_as_it_would_have_without_the_poison(aftermath: Aftermath) -> None:
    assert list(aftermath.expected.values()).count("completed") == 40
    wrong = {
        saga_id: f"{aftermath.final[saga_id]} (should be {status})"
        for saga_id, status in aftermath.expected.items()
        if aftermath.final[saga_id] != status
    }
    assert not wrong, (
        f"{len(wrong)} of {len(aftermath.expected)} orders did not end as due: {wrong}"
    )
    # nor did any of them wait for a deadline: no reply or command was held up on the way
    assert not aftermath.timed_out, f"steps that timed out: {aftermath.timed_out}"


def test_every_poison_record_is_dead_lettered_with_its_reason_and_origin(
    aftermath: Aftermath,
) -> None:
    missing = [str(s) for s in aftermath.poison if letter_for(s, aftermath.letters) is None]
    assert not missing, f"{len(missing)} of {len(aftermath.poison)} not dead-lettered: {missing}"
    for sent in aftermath.poison:
        letter = letter_for(sent, aftermath.letters)
        assert letter is not None
        assert letter.value == sent.value, f"{sent}: the dead letter holds another value"
        assert letter.reason, f"{sent}: the dead letter gives no failure_reason"
        assert letter.original_topic == sent.topic


def test_the_consumer_groups_commit_past_every_poison_record(aftermath: Aftermath) -> None:
    stuck = [
        f"{s}: committed {aftermath.committed.get((s.topic, s.partition))}"
        for s in not_passed(aftermath.poison, aftermath.committed)
    ]
    assert not stuck, f"the consumer group never committed past {len(stuck)} records: {stuck}"


def test_no_consumer_crashed_or_restarted(aftermath: Aftermath) -> None:
    assert not aftermath.exited, f"processes exited: {aftermath.exited}"
    unhandled = {
        name: lines for name, log in aftermath.logs.items() if (lines := unhandled_errors(log))
    }
    assert not unhandled, f"errors nothing handled, by process: {unhandled}"


# -- a UUID is a UUID however it is written -------------------------------------------------

SPELLINGS: dict[str, Callable[[str], str]] = {
    "upper case": str.upper,
    "braced": lambda u: "{" + u + "}",
    "urn": lambda u: "urn:uuid:" + u,
}


def charge_id(spelling: str) -> str:
    return "ch-" + spelling.replace(" ", "-")


def test_a_reply_with_ids_in_another_uuid_spelling_is_applied_once(system: System) -> None:
    """Upper case, braces and urn:uuid: name the same UUID: such a reply advances its saga
    exactly as the canonical one would, and the same reply in canonical form is then a
    duplicate: ignored, leaving no second trace on the timeline."""
    ns = system.namespace
    replies = f"{ns}.replies"
    sku = new_sku(system, 10)
    answered: dict[str, tuple[str, messages.Message]] = {}
    system.stop("payment", timeout_s=STOP_GRACE_S / 2)
    try:
        for spelling in SPELLINGS:
            saga_id = system.start_saga(order(sku), version=1)
            command = codec.decode(first(system, f"{ns}.payment.commands", saga_id))
            reply = messages.reply_to(
                command,
                source="payment",
                outcome=messages.Outcome.SUCCESS,
                now=datetime.now(UTC),
                data={"chargeId": charge_id(spelling)},
            )
            answered[saga_id] = (spelling, reply)
        respelled = []
        for saga_id, (spelling, reply) in answered.items():
            envelope = codec.to_dict(reply)
            envelope["messageId"] = SPELLINGS[spelling](reply.message_id)
            envelope["sagaId"] = SPELLINGS[spelling](reply.saga_id)
            value = json.dumps(envelope).encode()
            respelled.append(Record(spelling, replies, saga_id, value, "payment"))
        publish(system, respelled)

        for saga_id, (spelling, reply) in answered.items():
            saga = system.wait_timeline(saga_id, "reply_received", "charge_payment", timeout_s=10)
            received = [
                e
                for e in saga["timeline"]
                if e["kind"] == "reply_received" and e["step"] == "charge_payment"
            ]
            assert [e["message_id"] for e in received] == [reply.message_id], spelling

        canonical = [
            Record("canonical", replies, s, codec.encode(r), "payment")
            for s, (_, r) in answered.items()
        ]
        resent = publish(system, canonical)
        wait_for(
            lambda: not not_passed(resent, committed_offsets(system, [replies])),
            15,
            "the worker to commit past the canonical replies",
            interval_s=0.5,
        )
        for saga_id, (spelling, reply) in answered.items():
            timeline = system.saga(saga_id)["timeline"]
            traces = [e["kind"] for e in timeline if e["message_id"] == reply.message_id]
            assert traces == ["reply_received"], f"{spelling}: {traces}"
        # payment is still down: what charged the card can only be the respelled reply
        for saga_id, (spelling, _) in answered.items():
            saga = system.wait_final(saga_id, 15)
            assert saga["status"] == "completed", spelling
            assert saga["context"]["chargeId"] == charge_id(spelling)
    finally:
        system.start("payment")
