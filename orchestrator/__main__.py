"""`orchestrator api|worker|migrate|topics`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from orchestrator import logs
from orchestrator.saga.errors import OrchestratorError
from orchestrator.settings import Settings, SettingsError, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="serve the REST api")
    api.add_argument("--port", type=int, help="port (default: SAGA_API_PORT or 8000)")
    commands.add_parser("worker", help="relay the outbox and consume replies")
    commands.add_parser("migrate", help="upgrade the database schema to the newest revision")
    commands.add_parser("topics", help="create the Kafka topics that are missing")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        sys.exit(f"orchestrator: {exc.message}")
    logs.configure(settings.log_level, settings.log_format)

    try:
        _run(args, settings)
    except OrchestratorError as exc:  # a configuration problem found at start-up
        sys.exit(f"orchestrator: {exc.message}")


def _run(args: argparse.Namespace, settings: Settings) -> None:
    from orchestrator import bootstrap
    from orchestrator.store import migrate

    if args.command == "api":
        bootstrap.run_api(settings, args.port)
    elif args.command == "worker":
        bootstrap.run_worker(settings)
    elif args.command == "migrate":
        migrate.upgrade(settings.database_url)
        print("database schema is at the newest revision")
    elif args.command == "topics":
        created = asyncio.run(bootstrap.create_topics(settings))
        print("created: " + (", ".join(created) if created else "nothing, all exist"))


if __name__ == "__main__":
    main()
