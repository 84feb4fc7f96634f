"""`participants worker NAME`, `participants migrate NAME|--all`, `participants revision NAME
-m MESSAGE` and `participants inventory restock SKU QTY`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from orchestrator import logs
from orchestrator.settings import Settings, SettingsError, load_settings
from participants import registry


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="participants", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser(
        "worker",
        help="consume a participant's commands: one shipped here, installed under the "
        f"entry-point group {registry.ENTRY_POINT_GROUP!r} or named in SAGA_PARTICIPANT_MODULES",
    )
    worker.add_argument("name")
    worker.add_argument(
        "--port",
        type=int,
        default=None,
        help="serve /healthz, /readyz and /metrics on this port "
        "(default: SAGA_PARTICIPANT_METRICS_PORT; 0: none)",
    )
    inventory = commands.add_parser("inventory", help="inventory operations")
    inventory_commands = inventory.add_subparsers(dest="action", required=True)
    restock = inventory_commands.add_parser("restock", help="set the stock of a SKU")
    restock.add_argument("sku")
    restock.add_argument("quantity", type=int)
    _add_migration_commands(commands)
    return parser


def _add_migration_commands(commands: argparse._SubParsersAction[Any]) -> None:
    migrate = commands.add_parser(
        "migrate", help="upgrade a participant's schema with its own migrations"
    )
    which = migrate.add_mutually_exclusive_group(required=True)
    which.add_argument("name", nargs="?", help="the participant")
    which.add_argument("--all", action="store_true", help="every participant this process knows")
    migrate.add_argument("--revision", default="head", help="upgrade to this revision (a NAME's)")
    revision = commands.add_parser("revision", help="add a revision to a participant's migrations")
    revision.add_argument("name")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument(
        "--autogenerate", action="store_true", help="from the tables in code against the database"
    )


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"participants: {exc.message}")
    logs.configure(settings.log_level, settings.log_format)
    if args.command == "worker":
        from participants import runtime

        port = settings.participant_metrics_port if args.port is None else args.port
        if not 0 <= port <= 65535:
            sys.exit("participants: the port must be between 0 and 65535")
        try:
            participant = registry.participant(args.name, settings)
        except registry.UnknownParticipantError as exc:
            sys.exit(f"participants: {exc}")
        from orchestrator import tracing

        tracing.configure(f"saga-participant-{participant.name}")
        runtime.serve(participant, settings, port)
    elif args.command in ("migrate", "revision"):
        _migrations(args, settings)
    else:
        if args.quantity < 0:
            sys.exit("participants: the quantity must be 0 or more")
        asyncio.run(_restock(settings, args.sku, args.quantity))
        print(f"{args.sku}: {args.quantity} in stock")


def _migrations(args: argparse.Namespace, settings: Settings) -> None:
    from orchestrator.saga.errors import OrchestratorError
    from participants.kit import migrate

    if args.command == "migrate" and args.all and args.revision != "head":
        sys.exit("participants: --revision needs a NAME: each participant has its own history")
    try:
        if args.command == "revision":
            found = registry.participant(args.name, settings)
            path = migrate.revision(found, settings.database_url, args.message, args.autogenerate)
            print(f"wrote {path}")
            return
        for name in registry.names(settings) if args.all else [args.name]:
            found = registry.participant(name, settings)
            if found.migrations is None and args.all:
                print(f"{name}: ships no migrations of its own, skipped")
                continue
            migrate.upgrade(found, settings.database_url, args.revision)
            now = migrate.current(found, settings.database_url)
            print(f"{name}: schema {found.schema!r} is at {', '.join(now) or 'no revision'}")
    except (registry.UnknownParticipantError, OrchestratorError) as exc:
        sys.exit(f"participants: {exc}")


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
