"""`orchestrator api|worker|migrate|topics`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import logs
from orchestrator.saga.definition import DefinitionRegistry
from orchestrator.saga.errors import OrchestratorError
from orchestrator.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from orchestrator.signing import Sign


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    api = commands.add_parser("api", help="serve the REST api")
    api.add_argument("--port", type=int, help="port (default: SAGA_API_PORT or 8000)")
    commands.add_parser("worker", help="relay the outbox and consume replies")
    commands.add_parser("sagas", help="query and act on sagas through the api (see --help)")
    commands.add_parser(
        "migrate",
        help="upgrade the orchestrator's tables to the newest revision (each participant "
        "migrates its own schema: `participants migrate NAME|--all`)",
    )
    commands.add_parser("topics", help="create the Kafka topics that are missing")
    dlq = commands.add_parser("dlq", help="read and replay dead-lettered messages")
    dlq_commands = dlq.add_subparsers(dest="action", required=True)
    dlq_list = dlq_commands.add_parser("list", help="the dead letters of a topic")
    dlq_list.add_argument("topic", help="e.g. saga.replies (the .dlq suffix is optional)")
    dlq_list.add_argument("--limit", type=int, default=100)
    for name, text in (("show", "one dead letter in full"), ("replay", "publish it again")):
        one = dlq_commands.add_parser(name, help=text)
        one.add_argument("topic")
        one.add_argument("position", help="PARTITION:OFFSET, as `dlq list` shows it")
        if name == "replay":
            one.add_argument("--value-file", help="publish this file's bytes instead (a fix)")
            one.add_argument("--reason", required=True, help="why, for the record")
            one.add_argument(
                "--by", default=_os_user(), help="who replays it (default: the OS user)"
            )
    archive = commands.add_parser(
        "archive",
        help="move finished sagas (completed, compensated) with their steps and timeline to "
        "a gzipped JSON-lines file, or drop them, in small batches",
    )
    archive.add_argument(
        "--older-than",
        help="not updated for this long, e.g. 30d (default: SAGA_FINISHED_RETENTION_S)",
    )
    where = archive.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="FILE.jsonl.gz", help="append them to this file")
    where.add_argument("--drop", action="store_true", help="delete them without a copy")
    archive.add_argument(
        "--include-failed", action="store_true", help="failed sagas too (they wait on operators)"
    )
    archive.add_argument("--batch", type=int, default=200, help="sagas per transaction")
    definitions = commands.add_parser("definitions", help="the saga definitions loaded")
    definition_commands = definitions.add_subparsers(dest="action", required=True)
    definition_commands.add_parser("list", help="every saga type and version")
    show = definition_commands.add_parser("show", help="a definition's steps and diagram")
    show.add_argument("name")
    show.add_argument("--version", type=int, help="the newest when omitted")
    show.add_argument("--format", choices=["text", "mermaid", "dot", "svg", "png"], default="text")
    show.add_argument("--output", help="write the diagram to this file (svg, png)")
    _add_conformance(commands)
    _add_contracts(commands)
    return parser


def _add_contracts(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    contracts = commands.add_parser("contracts", help="the published message contracts")
    contract_commands = contracts.add_subparsers(dest="action", required=True)
    export = contract_commands.add_parser(
        "export", help="write DIR/asyncapi.json and DIR/schemas/<message type>.v<N>.json"
    )
    export.add_argument("directory", metavar="DIR", help="e.g. contracts (the checked-in copy)")
    export.add_argument(
        "--allow-breaking",
        action="store_true",
        help="overwrite published schemas even where a change breaks their readers",
    )


def _contracts(args: argparse.Namespace) -> None:
    """Needs no settings: the contracts come from the code alone."""
    from orchestrator import asyncapi

    try:
        written = asyncapi.export(Path(args.directory), args.allow_breaking)
    except asyncapi.BreakingChangeError as exc:
        sys.exit(f"orchestrator: {exc}")
    print(f"wrote {len(written)} files to {args.directory}")


def _add_conformance(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser(
        "conformance", help="check a running participant, in any language, over Kafka"
    )
    add = check.add_argument
    add("--participant", metavar="NAME", required=True, help="as the saga steps name it")
    add("--kafka", metavar="SERVERS", help="default: SAGA_KAFKA_BOOTSTRAP_SERVERS")
    add("--namespace", metavar="NS", help="of the topics; default: SAGA_TOPIC_NAMESPACE")
    add("--timeout", metavar="S", type=float, default=20.0, help="for each reply (20)")
    add("--saga", metavar="TYPE", help="the saga whose step names it (default: the first)")
    add("--input", metavar="FILE", help="a valid input of that saga (JSON), for payloads")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sagas"]:  # the operator's CLI talks to the api, not to the database
        from orchestrator.cli import app

        app(argv[1:], prog_name="orchestrator sagas")
        return
    args = _parser().parse_args(argv)
    if args.command == "contracts":
        _contracts(args)
        return
    try:
        settings = _settings(args)
    except SettingsError as exc:
        sys.exit(f"orchestrator: {exc.message}")
    logs.configure(settings.log_level, settings.log_format)
    if args.command in ("api", "worker"):
        from orchestrator import tracing

        tracing.configure(f"saga-{args.command}")

    try:
        _run(args, settings)
    except OrchestratorError as exc:  # a configuration problem found at start-up
        sys.exit(f"orchestrator: {exc.message}")


def _settings(args: argparse.Namespace) -> Settings:
    if args.command != "conformance":
        return load_settings()
    given = {"kafka_bootstrap_servers": args.kafka, "topic_namespace": args.namespace}
    return load_settings(database=False, **{k: v for k, v in given.items() if v})


def _run(args: argparse.Namespace, settings: Settings) -> None:
    from orchestrator import bootstrap
    from orchestrator.store import migrate

    if args.command == "api":
        bootstrap.run_api(settings, args.port)
    elif args.command == "worker":
        bootstrap.run_worker(settings)
    elif args.command == "migrate":
        migrate.upgrade(settings.database_url)
        print("the orchestrator's tables are at the newest revision")
    elif args.command == "definitions":
        _definitions(args, bootstrap.build_registry(settings))
    elif args.command == "dlq":
        fix = Path(args.value_file).read_bytes() if getattr(args, "value_file", None) else None
        asyncio.run(_dlq(args, settings, fix))
    elif args.command == "archive":
        asyncio.run(_archive(args, settings))
    elif args.command == "conformance":
        from orchestrator import conformance

        sys.exit(conformance.command(args, settings))
    elif args.command == "topics":
        created = asyncio.run(bootstrap.create_topics(settings))
        print("created: " + (", ".join(created) if created else "nothing, all exist"))


async def _archive(args: argparse.Namespace, settings: Settings) -> None:
    from orchestrator import durations
    from orchestrator.store.retention import FINISHED, Archived, SqlRetention
    from orchestrator.store.unit_of_work import engine_for

    if args.older_than is not None:
        try:
            older_than_s = durations.parse(args.older_than).total_seconds()
        except (ValueError, OverflowError) as exc:
            sys.exit(f"orchestrator: --older-than: {exc}")
    elif settings.finished_retention_s:
        older_than_s = settings.finished_retention_s
    else:
        sys.exit("orchestrator: give --older-than, or set SAGA_FINISHED_RETENTION_S")
    if not 1 <= args.batch <= 10_000:
        sys.exit("orchestrator: --batch must be between 1 and 10000")
    statuses = (*FINISHED, "failed") if args.include_failed else FINISHED
    engine = engine_for(settings, 1)
    retention = SqlRetention(engine)
    total = 0
    with contextlib.ExitStack() as closing:
        keep = None
        if args.to:
            raw = closing.enter_context(open(args.to, "ab"))  # noqa: ASYNC230  # a CLI
            archive = closing.enter_context(gzip.GzipFile(fileobj=raw, mode="ab"))

            def keep(sagas: Sequence[Archived]) -> None:
                """On disk before the transaction that deletes them commits."""
                archive.write(b"".join(json.dumps(s).encode() + b"\n" for s in sagas))
                archive.flush()
                raw.flush()
                os.fsync(raw.fileno())

        try:
            while n := await retention.remove_finished(older_than_s, args.batch, keep, statuses):
                total += n
        finally:
            await engine.dispose()
    done = f"archived {total} saga(s) to {args.to}" if args.to else f"dropped {total} saga(s)"
    print(done)


def _definitions(args: argparse.Namespace, registry: DefinitionRegistry) -> None:
    from orchestrator import diagram

    if args.action == "list":
        for definition in registry.all():
            steps = " -> ".join(s.name for s in definition.steps)
            print(f"{definition.name} v{definition.version}: {steps}")
        return
    definition = registry.get(args.name, args.version)
    if args.format == "text":
        print(diagram.table(definition) + "\n\n" + diagram.mermaid(definition))
    elif args.format == "mermaid":
        print(diagram.mermaid(definition))
    elif args.format == "dot":
        print(diagram.dot(definition))
    else:
        _render(diagram.dot(definition), args.format, args.output)


def _render(source: str, fmt: str, output: str | None) -> None:
    dot = shutil.which("dot")
    if dot is None:
        sys.exit("orchestrator: rendering needs Graphviz's `dot` (apt-get install graphviz)")
    target = output or f"saga.{fmt}"
    subprocess.run([dot, f"-T{fmt}", "-o", target], input=source.encode(), check=True)
    print(f"wrote {target}")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid, e.g. in a container
        return f"uid-{os.getuid()}"


async def _dlq(args: argparse.Namespace, settings: Settings, fix: bytes | None) -> None:
    from orchestrator.transport import dead_letters
    from orchestrator.transport.security import kafka_security

    servers = settings.kafka_bootstrap_servers
    security = kafka_security(settings)
    letters = await dead_letters.read(
        servers, args.topic, getattr(args, "limit", 100_000), security
    )
    if args.action == "list":
        print(f"{'position':<12} {'from':<40} reason")
        for d in letters:
            origin = f"{d.original_topic}[{d.headers.get('original_partition')}]@" + str(
                d.headers.get("original_offset")
            )
            print(f"{d.partition}:{d.offset:<10} {origin:<40} {d.reason}")
        print(f"{len(letters)} dead letter(s)")
        return
    partition, _, offset = args.position.partition(":")
    letter = next(
        (d for d in letters if f"{d.partition}:{d.offset}" == f"{partition}:{offset}"), None
    )
    if letter is None:
        raise dead_letters.DeadLetterNotFoundError(f"no dead letter at {args.position}")
    if args.action == "show":
        for name, header in sorted(letter.headers.items()):
            print(f"{name}: {header}")
        print(f"key: {letter.key}\n\n{letter.value.decode(errors='replace')}")
        return
    sign = None if fix is None else _signer_of_fix(settings, letter.original_topic, fix)
    topic = await dead_letters.replay(
        servers, letter, fix, security, replayed_by=args.by, reason=args.reason, sign=sign
    )
    print(f"replayed {args.position} to {topic}")


def _signer_of_fix(settings: Settings, topic: str, fix: bytes) -> Sign:
    """A fixed message is signed anew, as its sender (the envelope's source) would sign it:
    replaying a fix takes the keys its consumer trusts, and leaves who and why with it."""
    from orchestrator import codec, signing
    from orchestrator.saga.errors import UndecodableMessageError

    try:
        source = codec.decode(fix).source
    except UndecodableMessageError as exc:
        raise UndecodableMessageError(
            f"the fixed value is not an envelope: {exc.message}"
        ) from None
    prefix = f"{settings.topic_namespace}."
    channel = topic.removeprefix(prefix).removesuffix(".commands")
    recipient = (
        channel if topic == settings.topic(channel) and topic.endswith("commands") else None
    )
    return signing.message_keys(settings).signer(source, recipient)


if __name__ == "__main__":
    main()
