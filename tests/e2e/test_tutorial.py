"""docs/your-own-saga.md, executed: its package is written to a directory outside the
repository, installed into this virtualenv and run through the real api, worker and
`participants worker` processes; every effect is checked in the participants' tables."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, service_urls
from tests.e2e.system import System, free_port, wait_for

TUTORIAL = ROOT / "docs" / "your-own-saga.md"
DISTRIBUTION = "acme-transfers"
PARTICIPANTS = ["wallet", "bank"]
PORTS: dict[str, int] = {}  # each participant worker's /healthz, /readyz and /metrics


def tutorial_files() -> dict[str, str]:
    """Each block the tutorial marks with `<!-- file: PATH -->` (several markers: one
    block written to each path)."""
    files: dict[str, str] = {}
    pending: list[str] = []
    lines = iter(TUTORIAL.read_text().splitlines(keepends=True))
    for line in lines:
        marker = re.fullmatch(r"<!-- file: (\S+) -->\n", line)
        if marker:
            pending.append(marker.group(1))
        elif line.startswith("```") and pending:
            body = []
            for inner in lines:
                if inner.startswith("```"):
                    break
                body.append(inner)
            for path in pending:
                files[path] = "".join(body)
            pending = []
    return files


def pip(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("outside") / DISTRIBUTION
    for path, text in tutorial_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    pip("install", "--no-deps", "--no-build-isolation", "--quiet", str(root))
    try:
        yield root
    finally:
        pip("uninstall", "--yes", "--quiet", DISTRIBUTION)


@pytest.fixture(scope="module")
def transfers(package: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    database_url, kafka = service_urls()
    workdir = tmp_path_factory.mktemp("tutorial")
    # no SAGA_DEFINITIONS: the saga and the participants come from the entry points
    system = System(database_url, kafka, workdir, definitions="")
    system.create_database()
    try:
        for name in PARTICIPANTS:
            run(system, "participants", "migrate", name)
        with system.sql() as conn:
            conn.execute("INSERT INTO wallet.balance VALUES ('alice', 100.00)")
            conn.execute("INSERT INTO wallet.blocked_account VALUES ('acct-closed')")
        system.start_all(participants=[])
        for name in PARTICIPANTS:
            PORTS[name] = free_port()
            system.start(name, "participants", "worker", name, "--port", str(PORTS[name]))
        yield system
    finally:
        system.stop_all()
        system.delete_topics()
        system.drop_database()


def run(system: System, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *args], env=system.env, capture_output=True, text=True, cwd=cwd
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def transfer(system: System, transfer_id: str, account: str, amount: str) -> str:
    return system.start_saga(
        {
            "transferId": transfer_id,
            "sender": "alice",
            "recipientAccount": account,
            "amount": amount,
        },
        saga_type="transfer",
    )


def balance(system: System) -> Decimal:
    return Decimal(system.scalar("SELECT amount FROM wallet.balance WHERE owner = 'alice'"))


def effects(system: System, saga_id: str) -> dict[str, Any]:
    """What the participants did for one saga, from their own tables."""
    return {
        "withdrawals": system.scalar(
            "SELECT array_agg(status) FROM wallet.withdrawal WHERE saga_id = %s", saga_id
        ),
        "deposits": system.scalar("SELECT count(*) FROM bank.deposit WHERE saga_id = %s", saga_id),
    }


def step_status(system: System, saga_id: str, step: str) -> str:
    saga = system.saga(saga_id)
    return str(next(s["status"] for s in saga["steps"] if s["name"] == step))


def test_the_package_handler_tests_pass_with_the_participant_test_kit(
    package: Path, transfers: System
) -> None:
    output = run(
        transfers, "pytest", "-q", "-p", "no:cacheprovider", str(package / "tests"), cwd=package
    )
    assert "4 passed" in output


def probe(name: str, path: str) -> httpx.Response | None:
    try:
        return httpx.get(f"http://127.0.0.1:{PORTS[name]}{path}", timeout=2)
    except httpx.TransportError:
        return None


def test_each_participant_worker_serves_its_probes(transfers: System) -> None:
    for name in PARTICIPANTS:
        ready = wait_for(
            lambda name=name: (r := probe(name, "/readyz")) is not None and r.status_code == 200,
            60,
            f"{name} to be ready",
        )
        assert ready
        healthz = probe(name, "/healthz")
        assert healthz is not None
        assert healthz.json() == {"status": "ok"}


def test_a_transfer_completes(transfers: System) -> None:
    before = balance(transfers)
    saga_id = transfer(transfers, "t-complete", "acct-bob", "30.00")

    saga = transfers.wait_final(saga_id)

    assert saga["status"] == "completed"
    assert effects(transfers, saga_id) == {"withdrawals": ["withdrawn"], "deposits": 1}
    assert balance(transfers) == before - Decimal("30.00")
    metrics = probe("bank", "/metrics")
    assert metrics is not None
    assert (
        'saga_participant_commands_total{command="bank.deposit",outcome="success",'
        'participant="bank"} 1.0'
    ) in metrics.text


def test_a_transfer_refused_before_the_pivot_is_compensated(transfers: System) -> None:
    before = balance(transfers)
    saga_id = transfer(transfers, "t-blocked", "acct-closed", "10.00")

    saga = transfers.wait_final(saga_id)

    assert saga["status"] == "compensated"
    assert effects(transfers, saga_id) == {"withdrawals": ["refunded"], "deposits": 0}
    assert balance(transfers) == before
    assert step_status(transfers, saga_id, "screen_recipient") == "failed"
    assert step_status(transfers, saga_id, "deposit") == "pending"


def test_a_pivot_whose_participant_was_down_past_its_deadline_completes_forward(
    transfers: System,
) -> None:
    before = balance(transfers)
    transfers.stop("bank")
    saga_id = transfer(transfers, "t-bank-down", "acct-bob", "20.00")

    waiting = transfers.wait_timeline(saga_id, "resolve_unanswered", "deposit", timeout_s=60)

    # the deposit's outcome is unknown: nothing is refunded on a guess
    assert waiting["status"] == "running"
    assert step_status(transfers, saga_id, "deposit") == "resolving"
    assert effects(transfers, saga_id) == {"withdrawals": ["withdrawn"], "deposits": 0}
    # operators see what it waits on
    listed = transfers.api.get("/sagas", params={"resolving": "true"}).json()["items"]
    assert [s["id"] for s in listed] == [saga_id]
    stats = transfers.api.get("/sagas/stats").json()
    assert stats["resolving"] == {"total": 1, "by_step": {"transfer.deposit": 1}}
    transfers.start("bank")
    saga = transfers.wait_final(saga_id, timeout_s=90)

    assert saga["status"] == "completed"
    assert effects(transfers, saga_id) == {"withdrawals": ["withdrawn"], "deposits": 1}
    assert balance(transfers) == before - Decimal("20.00")
    assert transfers.api.get("/sagas/stats").json()["resolving"]["total"] == 0
    resolved = [e for e in saga["timeline"] if e["kind"] == "step_succeeded"]
    assert {"step": "deposit", "resolved": True}.items() <= {
        "step": resolved[-1]["step"],
        **resolved[-1]["detail"],
    }.items()
    # both attempts reached the bank; the second was answered from its inbox
    attempts = transfers.scalar(
        "SELECT count(*) FROM bank.inbox WHERE saga_id = %s AND command_type = 'bank.deposit'",
        saga_id,
    )
    assert attempts == 2


def test_an_abort_while_the_pivot_is_in_flight_never_refunds_a_deposit(
    transfers: System,
) -> None:
    before = balance(transfers)
    transfers.stop("bank")
    saga_id = transfer(transfers, "t-abort", "acct-bob", "10.00")
    wait_for(
        lambda: step_status(transfers, saga_id, "deposit") == "sent",
        30,
        "the deposit to be sent",
    )

    aborted = transfers.api.post(f"/sagas/{saga_id}/abort", json={"reason": "customer called"})

    assert aborted.status_code == 200, aborted.text
    assert transfers.saga(saga_id)["status"] == "compensating"
    assert step_status(transfers, saga_id, "deposit") == "resolving"
    assert effects(transfers, saga_id) == {"withdrawals": ["withdrawn"], "deposits": 0}
    transfers.start("bank")
    saga = transfers.wait_final(saga_id, timeout_s=90)

    # the deposit had reached the bank: the abort is overruled, and nothing is refunded
    assert saga["status"] == "completed"
    assert "abort_overruled" in [e["kind"] for e in saga["timeline"]]
    assert effects(transfers, saga_id) == {"withdrawals": ["withdrawn"], "deposits": 1}
    assert balance(transfers) == before - Decimal("10.00")


def test_an_operator_fences_a_deposit_whose_bank_cannot_answer(transfers: System) -> None:
    """Last: the bank stays down. The operator has made sure the deposit cannot land (in
    real life: the bank's queue purged, its service gone) and settles the step by hand."""
    before = balance(transfers)
    transfers.stop("bank")
    saga_id = transfer(transfers, "t-fenced", "acct-bob", "5.00")
    transfers.wait_timeline(saga_id, "resolve_unanswered", "deposit", timeout_s=60)
    early = transfers.api.post(
        f"/sagas/{saga_id}/steps/withdraw/fence", json={"reason": "wrong step"}
    )
    assert early.status_code == 409, early.text

    fenced = transfers.api.post(
        f"/sagas/{saga_id}/steps/deposit/fence", json={"reason": "bank decommissioned"}
    )

    assert fenced.status_code == 200, fenced.text
    saga = transfers.wait_final(saga_id)
    assert saga["status"] == "compensated"
    assert effects(transfers, saga_id) == {"withdrawals": ["refunded"], "deposits": 0}
    assert balance(transfers) == before
    assert "operator_fence" in [e["kind"] for e in saga["timeline"]]
