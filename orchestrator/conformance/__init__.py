"""The conformance kit: drives a running participant, written in any language, only through
Kafka, and checks what it does against the rules every participant must keep (see `RULES`).

It sends the participant's commands as the orchestrator sends them (signed, with deadlines,
payloads built by the saga definition from an example input): valid, duplicated, out of
order, a compensation before its action, an unknown version, garbage. Each scenario runs on
sagas of its own, new on every run, so a participant with data of its own can be checked.

    checks = await conformance.check(settings, "payment")
    sys.exit(conformance.report(checks))
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestrator import sagas, sealed, signing
from orchestrator.conformance import envelope, scenarios
from orchestrator.conformance.examples import NoSubjectError, subject
from orchestrator.conformance.probe import RULES, Check, Probe, ReplyValidator, Status
from orchestrator.conformance.wire import MissingTopicError, Wire
from orchestrator.saga.errors import OrchestratorError
from orchestrator.settings import Settings
from orchestrator.transport.security import kafka_security

__all__ = [
    "RULES",
    "Check",
    "MissingTopicError",
    "NoSubjectError",
    "Status",
    "check",
    "report",
]


async def check(
    settings: Settings,
    participant: str,
    *,
    saga_type: str | None = None,
    saga_input: Mapping[str, Any] | None = None,
    timeout_s: float = 20.0,
    settle_s: float = 1.0,
    validate: ReplyValidator | None = None,
) -> list[Check]:
    """Every rule's result against the participant on the settings' broker and namespace.
    `timeout_s` bounds each wait for a reply or a dead letter; `settle_s` is how long the
    run still listens for replies that must not come."""
    found = subject(
        sagas.build_registry(settings.definition_modules), participant, saga_type, saga_input
    )
    keys = signing.message_keys(settings)
    keys.signer(signing.ORCHESTRATOR, participant)  # NoSigningKeyError now, not mid-run
    wire = Wire(
        settings.kafka_bootstrap_servers,
        settings.topic(participant),
        settings.topic("replies"),
        kafka_security(settings),
    )
    async with wire:
        probe = Probe(
            found,
            wire,
            keys,
            sealed.key_ring(settings),
            timeout_s,
            settle_s,
            validate or envelope.validator(found),
        )
        checks = await _scenarios(probe)
        await asyncio.sleep(settle_s)
        checks += envelope.every_reply(probe)
    order = list(RULES)
    return sorted(checks, key=lambda c: order.index(c.rule))


async def _scenarios(probe: Probe) -> list[Check]:
    """Every scenario at once, each on sagas of its own; a broker's error ends the run."""
    runs: list[asyncio.Task[list[Check]]] = []
    try:
        async with asyncio.TaskGroup() as group:  # one raising cancels the others
            for scenario in scenarios.SCENARIOS:
                runs.append(group.create_task(scenario(probe)))
            for scenario, rules in scenarios.WITH_COMPENSATION.items():
                run = scenario(probe) if probe.subject.compensation else _skip(rules)
                runs.append(group.create_task(run))
    except* OrchestratorError as errors:
        raise errors.exceptions[0] from None
    return [c for run in runs for c in run.result()]


async def _skip(rules: list[str]) -> list[Check]:
    return scenarios.not_applicable(rules)


_STYLE = {Status.PASS: "green", Status.FAIL: "bold red", Status.SKIP: "yellow"}


def report(checks: Sequence[Check], console: Console | None = None) -> int:
    """Print the table; the exit status: 0 when no rule failed."""
    table = Table("rule", "result", "detail", box=box.SIMPLE_HEAD)
    for c in checks:
        table.add_row(c.rule, Text(c.status.value, _STYLE[c.status]), Text(_shown(c.detail)))
    console = console or Console()
    console.print(table)
    failures = sum(c.status is Status.FAIL for c in checks)
    console.print(f"{len(checks) - failures} of {len(checks)} rules kept")
    return 1 if failures else 0


def _shown(detail: str, limit: int = 300) -> str:
    """A detail fit for a terminal: what a participant sent may hold anything."""
    text = "".join(ch if ch.isprintable() else "?" for ch in detail)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`orchestrator conformance`: the run, on the broker and namespace of the settings (the
    options --kafka and --namespace are already in them)."""
    saga_input = None
    if args.input:
        try:
            saga_input = json.loads(Path(args.input).read_text())
        except (OSError, ValueError) as exc:
            raise InputFileError(f"--input {args.input}: {exc}") from None
    checks = asyncio.run(
        check(
            settings,
            args.participant,
            saga_type=args.saga,
            saga_input=saga_input,
            timeout_s=args.timeout,
        )
    )
    return report(checks)


class InputFileError(OrchestratorError):
    """The saga input file cannot be read as JSON."""
