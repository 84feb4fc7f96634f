"""Poison messages go to the dead-letter topic with the reason, block nothing, change nothing;
an operator can read them and replay a fixed one."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from orchestrator import codec
from orchestrator.saga import messages
from orchestrator.transport import dead_letters
from participants import registry
from tests.e2e.kafka import dead, first, publish
from tests.e2e.orders import new_sku, order, stock
from tests.e2e.system import System, orchestrator_key_for, wait_for

pytestmark = pytest.mark.e2e


def reply_like(saga_id: str, **changes: object) -> bytes:
    envelope = {
        "messageId": str(uuid.uuid4()),
        "messageType": "inventory.reserve.reply",
        "version": 1,
        "kind": "reply",
        "timestamp": datetime.now(UTC).isoformat(),
        "sagaId": saga_id,
        "sagaType": "order",
        "step": "reserve_inventory",
        "attempt": 1,
        "source": "inventory",
        "payload": {"outcome": "success"},
    }
    envelope.update(changes)
    return json.dumps({k: v for k, v in envelope.items() if v is not None}).encode()


def mutations(saga_id: str, rng: random.Random) -> list[bytes]:
    """Random bytes, and envelopes broken in every way the reader must notice."""
    noise = [rng.randbytes(rng.randint(0, 64)) for _ in range(5)]
    broken = [
        b"not json at all",
        b"[1, 2, 3]",
        b"{}",
        reply_like(saga_id, version=99),
        reply_like(saga_id, source=None),
        reply_like(saga_id, sagaId="not-a-uuid"),
        reply_like(saga_id, payload={"outcome": "maybe"}),
        reply_like(saga_id, payload="a string"),
        reply_like(saga_id, kind="telegram"),
        reply_like(saga_id, attempt="first"),
        reply_like(str(uuid.uuid4())),  # a saga that does not exist
        reply_like(saga_id, messageType="payment.teleport.reply"),  # no such command
    ]
    return noise + broken


def test_poison_replies_are_dead_lettered_and_park_only_their_saga(system: System) -> None:
    sku = new_sku(system, 10)
    parked = system.wait_final(system.start_saga(order(sku), version=1))
    before = system.scalar("SELECT count(*) FROM saga")
    poison = mutations(parked["id"], random.Random(7))

    poisoned = [(parked["id"].encode(), p) for p in poison]
    # signed as the replies claim to be: what is refused here is refused for what it says
    publish(system, f"{system.namespace}.replies", poisoned, signed_by="inventory")

    def letters_of_parked() -> list[dead_letters.DeadLetter]:
        return [d for d in dead(system, f"{system.namespace}.replies") if d.key == parked["id"]]

    letters = wait_for(
        lambda: (d := letters_of_parked()) and len(d) >= len(poison) and d,
        60,
        "every poison reply to be dead-lettered",
    )

    assert len(letters) == len(poison)
    assert {d.value for d in letters} == set(poison)
    for letter in letters:
        assert letter.reason
        assert letter.original_topic == f"{system.namespace}.replies"
        assert letter.headers["original_offset"].isdigit()
    reasons = " | ".join(d.reason for d in letters)
    assert "not JSON" in reasons
    assert "version 99" in reasons
    assert "no saga has id" in reasons
    assert "answers no command" in reasons
    # nothing stored changed, and the consumer moved on: a new saga still completes
    assert system.scalar("SELECT count(*) FROM saga") == before
    assert system.wait_final(system.start_saga(order(sku), version=1))["status"] == "completed"
    timeline = system.saga(parked["id"])["timeline"]
    # the two that could be read and name this saga: version 99 and the unknown type
    parked_entries = [e for e in timeline if e["kind"] == "message_dead_lettered"]
    assert len(parked_entries) == 2
    assert all(e["detail"]["topic"] == f"{system.namespace}.replies" for e in parked_entries)
    assert stock(system, sku) == 6


@pytest.mark.parametrize("participant", registry.shipped_names())
def test_poison_commands_are_dead_lettered_by_every_participant(
    system: System, participant: str
) -> None:
    sku = new_sku(system, 10)
    saga_id = str(uuid.uuid4())
    topic = f"{system.namespace}.{participant}.commands"
    poison = [
        *mutations(saga_id, random.Random(participant))[:8],
        json.dumps(
            {
                **json.loads(reply_like(saga_id)),
                "kind": "command",
                "messageType": "x.unknown",
                "source": "orchestrator",
            }
        ).encode(),
    ]

    signer = orchestrator_key_for(participant)
    publish(system, topic, [(saga_id.encode(), p) for p in poison], signed_by=signer)
    letters = wait_for(
        lambda: [d for d in dead(system, topic) if d.value in poison] or None,
        60,
        f"the poison commands of {participant} to be dead-lettered",
        interval_s=0.5,
    )
    wait_for(
        lambda: len([d for d in dead(system, topic) if d.value in poison]) == len(poison) or None,
        60,
        "all of them",
    )

    assert all(d.original_topic == topic for d in letters)
    reasons = " | ".join(d.reason for d in dead(system, topic))
    assert f"{participant} does not handle command 'x.unknown'" in reasons
    assert stock(system, sku) == 10
    inbox = f"{participant}.inbox"
    assert system.scalar(f"SELECT count(*) FROM {inbox} WHERE saga_id = %s", saga_id) == 0


def dlq_cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "dlq", *args],
        env={**os.environ, **system.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_operator_replays_a_fixed_dead_letter_and_the_saga_goes_on(
    system: System, tmp_path: Path
) -> None:
    sku = new_sku(system, 10)
    system.stop("payment")
    try:
        saga_id = system.start_saga(order(sku), version=1)
        command = codec.decode(first(system, f"{system.namespace}.payment.commands", saga_id))
        good = messages.reply_to(
            command,
            source="payment",
            outcome=messages.Outcome.SUCCESS,
            now=datetime.now(UTC),
            data={"chargeId": "settled-by-phone"},
        )
        broken = {**codec.to_dict(good)}
        del broken["source"]
        publish(
            system,
            f"{system.namespace}.replies",
            [(saga_id.encode(), json.dumps(broken).encode())],
        )
        letter = wait_for(
            lambda: next(
                (d for d in dead(system, f"{system.namespace}.replies") if d.key == saga_id), None
            ),
            60,
            "the broken reply to be dead-lettered",
        )
        listed = dlq_cli(system, "list", f"{system.namespace}.replies")
        assert f"{letter.partition}:{letter.offset}" in listed.stdout
        assert "lacks source" in listed.stdout
        fixed = tmp_path / "fixed.json"
        fixed.write_bytes(codec.encode(good))

        replayed = dlq_cli(
            system,
            "replay",
            f"{system.namespace}.replies",
            f"{letter.partition}:{letter.offset}",
            "--value-file",
            str(fixed),
            "--reason",
            "settled by phone",
        )
        assert replayed.returncode == 0, replayed.stderr
        saga = system.wait_timeline(saga_id, "command_sent", "create_shipment")
        assert saga["context"]["chargeId"] == "settled-by-phone"
    finally:
        system.start("payment")
    assert system.wait_final(saga_id)["status"] == "completed"
