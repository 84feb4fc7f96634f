"""The demo: one order that completes and one that is compensated, with their timelines.

Run by `make demo` after the services are up and the schemas migrated; it sets the stock
the orders take from, starts the api, the worker and the participants in the background and
leaves them running.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import processes

PORT = os.environ.get("SAGA_API_PORT", "8000")
API = f"http://127.0.0.1:{PORT}"
# The demo's stock: its orders and the README's examples take SKU-RED.
DEMO_STOCK = {"SKU-RED": 1000, "SKU-BLUE": 1000}


def order(order_id: str, card: str) -> dict[str, Any]:
    return {
        "orderId": order_id,
        "customerId": "c-1",
        "items": [{"sku": "SKU-RED", "quantity": 2}],
        "amount": "49.90",
        "currency": "EUR",
        "card": card,
        "shippingAddress": {
            "country": "DE",
            "city": "Berlin",
            "line1": "Main St 1",
            "postalCode": "10115",
        },
    }


def wait_until(check: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.2)
    sys.exit(f"demo: gave up waiting for {what}; see the logs under .local/logs/")


def run(client: httpx.Client, title: str, saga_input: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/sagas", json={"type": "order", "input": saga_input})
    response.raise_for_status()
    location = response.headers["location"]

    def final() -> dict[str, Any] | None:
        saga: dict[str, Any] = client.get(location).json()
        return saga if saga["status"] in ("completed", "compensated", "failed") else None

    saga = wait_until(final, 60, f"saga {response.json()['id']}")
    print(f"\n{title}: saga {saga['id']} is {saga['status'].upper()}")
    print(f"  {'at':<15} {'event':<18} {'step':<18} detail")
    for entry in saga["timeline"]:
        detail = entry["detail"]
        note = detail.get("command") or detail.get("outcome") or ""
        if "error" in detail:
            note += f" ({detail['error'].get('code')}: {detail['error'].get('message')})"
        elif "code" in detail:
            note = f"{detail['code']}: {detail.get('message')}"
        print(f"  {entry['at'][11:23]:<15} {entry['kind']:<18} {entry['step'] or '':<18} {note}")
    return saga


def set_demo_stock() -> None:
    """Through the inventory participant, as an operator would."""
    for sku, quantity in DEMO_STOCK.items():
        restock = [str(processes.BIN / "participants"), "inventory", "restock", sku, str(quantity)]
        subprocess.run(restock, cwd=processes.ROOT, check=True)


def main() -> None:
    if processes.insecure():
        print(
            "The api runs with SAGA_INSECURE_DEV=1: no tokens needed, for this demo only.\n"
            "Set SAGA_OPERATOR_TOKENS / SAGA_VIEWER_TOKENS to protect it.\n"
        )
    set_demo_stock()
    processes.start()
    with httpx.Client(base_url=API, timeout=10) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, 60, "the api")
        suffix = time.strftime("%H%M%S")
        completed = run(
            client, "Order that completes", order(f"demo-ok-{suffix}", "4242424242424242")
        )
        compensated = run(
            client,
            "Order whose payment is declined",
            order(f"demo-declined-{suffix}", "4000000000000002"),
        )
    ok = completed["status"] == "completed" and compensated["status"] == "compensated"
    print(
        f"""
The api, the worker and the participants keep running (logs in .local/logs/).
  Start a saga:  curl -si -X POST {API}/sagas -H 'content-type: application/json' \\
                   -d '{{"type": "order", "input": {{...}}}}'
  Read it back:  curl -s {API}/sagas/{completed["id"]}
  Dashboard:     {API}/ui
  CLI:           .venv/bin/orchestrator sagas list --url {API}
                 .venv/bin/orchestrator sagas show {compensated["id"]} --url {API}
  Stop it all:   make stop"""
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
