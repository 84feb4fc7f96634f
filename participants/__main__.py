"""`participants worker NAME` and `participants inventory restock SKU QTY`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from orchestrator import logs
from orchestrator.settings import Settings, SettingsError, load_settings
from participants import registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="participants", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="consume a participant's commands")
    worker.add_argument("name", choices=registry.names())
    inventory = commands.add_parser("inventory", help="inventory operations")
    inventory_commands = inventory.add_subparsers(dest="action", required=True)
    restock = inventory_commands.add_parser("restock", help="set the stock of a SKU")
    restock.add_argument("sku")
    restock.add_argument("quantity", type=int)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"participants: {exc.message}")
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "worker":
        from participants import runtime

        runtime.run_worker(settings, args.name)
    else:
        if args.quantity < 0:
            sys.exit("participants: the quantity must be 0 or more")
        asyncio.run(_restock(settings, args.sku, args.quantity))
        print(f"{args.sku}: {args.quantity} in stock")


async def _restock(settings: Settings, sku: str, quantity: int) -> None:
    from orchestrator.store.unit_of_work import engine_for
    from participants.inventory.handlers import restock

    engine = engine_for(settings, 1)
    try:
        async with engine.begin() as conn:
            await restock(conn, sku, quantity)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    main()
