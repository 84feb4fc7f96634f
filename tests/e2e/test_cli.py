"""The operator's CLI, run as a user runs it, against the running api."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.e2e.orders import DECLINED_CARD, new_sku, order
from tests.e2e.system import OPERATOR_TOKEN, VIEWER_TOKEN, System

pytestmark = pytest.mark.e2e


def cli(system: System, *args: str, token: str | None = OPERATOR_TOKEN, url: str | None = None):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGA_")}
    env.update({"SAGA_API_URL": url or system.url, "COLUMNS": "200"})
    if token:
        env["SAGA_API_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "sagas", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_list_show_and_stats_print_what_the_api_knows(system: System) -> None:
    sku = new_sku(system, 10)
    saga_id = system.wait_final(system.start_saga(order(sku, card=DECLINED_CARD), version=1))["id"]

    listed = cli(system, "list", "--status", "compensated", "--limit", "500", token=VIEWER_TOKEN)
    shown = cli(system, "show", saga_id, token=VIEWER_TOKEN)
    stats = cli(system, "stats", token=VIEWER_TOKEN)

    assert listed.returncode == 0, listed.stderr
    assert saga_id in listed.stdout
    assert shown.returncode == 0, shown.stderr
    assert "card_declined" in shown.stdout
    assert "compensation_sent" in shown.stdout
    assert stats.returncode == 0, stats.stderr
    assert "compensated" in stats.stdout
    assert "outbox backlog" in stats.stdout


def test_watch_follows_a_saga_until_it_is_final(system: System) -> None:
    saga_id = system.start_saga(order(new_sku(system, 10)), version=1)

    watched = cli(system, "watch", saga_id, "--interval", "0.2")

    assert watched.returncode == 0, watched.stderr
    assert "saga_completed" in watched.stdout
    assert watched.stdout.strip().endswith(f"{saga_id} is completed")


def test_refusals_and_unreachable_servers_get_clear_messages(system: System) -> None:
    saga_id = system.wait_final(system.start_saga(order(new_sku(system, 10)), version=1))["id"]

    refused = cli(system, "abort", saga_id, "--reason", "too late")
    viewer = cli(system, "retry", saga_id, "--reason", "x", token=VIEWER_TOKEN)
    anonymous = cli(system, "list", token=None)
    unreachable = cli(system, "list", url="http://127.0.0.1:9")

    assert (refused.returncode, viewer.returncode) == (2, 2)
    assert "409: the saga is already completed" in refused.stderr
    assert "403" in viewer.stderr
    assert "401" in anonymous.stderr
    assert "SAGA_API_TOKEN" in anonymous.stderr
    assert "cannot reach the api at http://127.0.0.1:9" in unreachable.stderr
    assert "Traceback" not in refused.stderr + unreachable.stderr


def test_abort_from_the_cli_is_recorded_with_the_reason(system: System) -> None:
    sku = new_sku(system, 10)
    system.stop("payment")
    try:
        saga_id = system.start_saga(order(sku), version=1)
        system.wait_timeline(saga_id, "command_sent", "charge_payment")
        aborted = cli(system, "abort", saga_id, "--reason", "fraud suspected")
    finally:
        system.start("payment")

    assert aborted.returncode == 0, aborted.stderr
    assert "compensating" in aborted.stdout
    saga = system.wait_final(saga_id)
    assert saga["status"] == "compensated"
    entry = next(e for e in saga["timeline"] if e["kind"] == "operator_abort")
    assert entry["detail"] == {"actor": "tester", "reason": "fraud suspected"}
