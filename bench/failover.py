"""How long a killed process stops the sagas it serves: order sagas started at a steady rate,
one process killed with SIGKILL midway (and restarted at once, or not), then the longest
wait of any message, from the moment the broker took it to the moment its consumer applied
it: replies (applied by a worker, `reply_received` on the timeline) and commands (applied by
a participant, its inbox's `received_at`).

    python -m bench.failover                        every scenario, the settings as they are
    python -m bench.failover --session-timeout 3    with shorter consumer sessions

A scenario's figure covers its partitions only through the messages on them: with two
workers, the survivor's partitions go on, and the killed one's wait for its session to
expire and the group to rebalance.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.settings import load_settings
from tests.e2e import kafka
from tests.e2e.orders import order
from tests.e2e.system import System

SCENARIOS = {
    "SIGKILL the worker, restart at once": ("worker", True),
    "SIGKILL 1 of 2 workers": ("worker2", False),
    "SIGKILL 1 of 2 workers, restart at once": ("worker2", True),
    "SIGKILL payment, restart at once": ("payment", True),
}
SKU = "FAILOVER-1"


def start_steadily(system: System, rate: float, seconds: float, stop: threading.Event) -> int:
    started, began = 0, time.monotonic()
    while not stop.is_set() and time.monotonic() - began < seconds:
        response = system.api.post("/sagas", json={"type": "order", "input": order(SKU)})
        started += response.status_code == 202
        time.sleep(max(0.0, began + started / rate - time.monotonic()))
    return started


def longest_waits(system: System, participant: str) -> dict[str, float]:
    """The longest wait of a reply (worker) and of a command to `participant`, in s."""
    ns = system.namespace
    replies = kafka.appended_at(system, [f"{ns}.replies"])
    commands = kafka.appended_at(system, [f"{ns}.{participant}.commands"])
    with system.sql() as conn:
        applied = conn.execute(
            "SELECT message_id::text, extract(epoch FROM at) FROM saga_timeline "
            "WHERE kind = 'reply_received'"
        ).fetchall()
        received = conn.execute(
            f"SELECT message_id::text, extract(epoch FROM received_at) FROM {participant}.inbox"
        ).fetchall()
    reply_waits = [float(at) - replies[m] for m, at in applied if m in replies]
    command_waits = [float(at) - commands[m] for m, at in received if m in commands]
    return {
        "reply": max(reply_waits, default=0.0),
        "command": max(command_waits, default=0.0),
    }


def scenario(
    name: str,
    victim: str,
    restart: bool,
    rate: float,
    session_timeout_s: float | None,
    static: bool,
) -> dict[str, Any]:
    settings = load_settings()
    database_url, kafka = settings.database_url, settings.kafka_bootstrap_servers
    system = System(database_url, kafka, Path(tempfile.mkdtemp(prefix="failover-")), "")
    if session_timeout_s is not None:
        system.env["SAGA_CONSUMER_SESSION_TIMEOUT_S"] = str(session_timeout_s)
    if not static:
        system.env["SAGA_INSTANCE_ID"] = ""  # dynamic members, as without the setting
    system.create_database()
    try:
        system.restock(SKU, 1_000_000)
        system.start_all(participants=["inventory", "payment", "shipping"])
        if victim.startswith("worker2"):
            system.start(
                "worker2", "orchestrator", "worker", env={"SAGA_WORKER_METRICS_PORT": "0"}
            )
            time.sleep(5)  # both in the group
        stop = threading.Event()
        load = threading.Thread(target=start_steadily, args=(system, rate, 40, stop))
        load.start()
        time.sleep(15)
        system.kill(victim)
        if restart:
            system.start(victim)
        load.join()
        time.sleep(15)  # what was started finishes
        waits = longest_waits(system, "payment")
        finished = system.scalar(
            "SELECT count(*) FROM saga WHERE status IN ('completed', 'compensated')"
        )
        total = system.scalar("SELECT count(*) FROM saga")
        return {"scenario": name, **waits, "finished": f"{finished}/{total}"}
    finally:
        system.stop_all()
        system.delete_topics()
        system.drop_database()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20, help="sagas started per second")
    parser.add_argument("--session-timeout", type=float, help="SAGA_CONSUMER_SESSION_TIMEOUT_S")
    parser.add_argument("--only", choices=list(SCENARIOS), help="one scenario")
    parser.add_argument(
        "--dynamic", action="store_true", help="no SAGA_INSTANCE_ID: dynamic group members"
    )
    args = parser.parse_args()
    rows = [
        scenario(name, *SCENARIOS[name], args.rate, args.session_timeout, not args.dynamic)
        for name in ([args.only] if args.only else SCENARIOS)
    ]
    print(f"\n{'scenario':<40} {'reply wait s':>12} {'command wait s':>15}  finished")
    for r in rows:
        print(f"{r['scenario']:<40} {r['reply']:>12.1f} {r['command']:>15.1f}  {r['finished']}")


if __name__ == "__main__":
    main()
