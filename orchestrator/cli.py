"""`orchestrator sagas ...`: the operator's command line, a client of the REST api."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator.client import ApiError, SagaClient, SagaClientError, WaitTimeoutError, models

app = typer.Typer(
    name="sagas", help="Query and act on sagas through the api.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)

STATUS_STYLE = {
    "running": "cyan",
    "compensating": "yellow",
    "completed": "green",
    "compensated": "blue",
    "failed": "bold red",
}

Url = Annotated[str, typer.Option("--url", envvar="SAGA_API_URL", help="the api's base URL")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="SAGA_API_TOKEN", help="a bearer token")
]


@contextmanager
def api(url: str, token: str | None, poll_s: float = 1.0) -> Iterator[SagaClient]:
    """A client whose failures end the command with a clear message and status 2."""
    try:
        with SagaClient(url, token=token, poll_s=poll_s) as client:
            yield client
    except ApiError as exc:
        hint = {401: " (pass --token or set SAGA_API_TOKEN)"}.get(exc.status, "")
        fail(f"{exc.status}: {exc.message}{hint}")
    except SagaClientError as exc:
        fail(str(exc))


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _when(value: datetime | None) -> str:
    return value.strftime("%m-%d %H:%M:%S") if value else "-"


def _clock(value: datetime) -> str:
    return value.strftime("%H:%M:%S.%f")[:12]


@app.command("list")
def list_sagas(
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
    status: Annotated[list[str] | None, typer.Option("--status", "-s")] = None,
    saga_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    created_after: Annotated[datetime | None, typer.Option()] = None,
    created_before: Annotated[datetime | None, typer.Option()] = None,
    updated_before: Annotated[datetime | None, typer.Option()] = None,
    stuck_for: Annotated[str | None, typer.Option(help="e.g. 10m")] = None,
    parked: Annotated[
        bool | None, typer.Option("--parked/--not-parked", help="waiting for an operator")
    ] = None,
    overdue: Annotated[
        bool | None,
        typer.Option("--overdue/--not-overdue", help="due, and no running worker fires them"),
    ] = None,
    resolving: Annotated[
        bool | None,
        typer.Option(
            "--resolving/--not-resolving",
            help="waiting on a participant to say whether a step took effect",
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
    cursor: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List sagas, newest first."""
    filters: dict[str, Any] = {
        "status": status or [],
        "saga_type": saga_type,
        "created_after": created_after,
        "created_before": created_before,
        "updated_before": updated_before,
        "stuck_for": stuck_for,
        "parked": parked,
        "overdue": overdue,
        "resolving": resolving,
    }
    with api(url, token) as client:
        page = client.list(
            limit=limit, cursor=cursor, **{k: v for k, v in filters.items() if v is not None}
        )
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("type", "v", "status", "created", "updated"):
        table.add_column(name, no_wrap=True)
    for s in page.items:
        table.add_row(
            s.id,
            s.type,
            str(s.definition_version),
            _status(s.status) + (" [red]parked[/red]" if s.parked_at else ""),
            _when(s.created_at),
            _when(s.updated_at),
        )
    out.print(table)
    if page.next_cursor:
        out.print(f"more: --cursor {page.next_cursor}", highlight=False)


@app.command()
def show(saga_id: str, url: Url = "http://127.0.0.1:8000", token: Token = None) -> None:
    """A saga's steps and timeline."""
    with api(url, token) as client:
        _show(client.get(saga_id))


def _show(saga: models.Saga) -> None:
    out.print(
        f"[bold]{saga.type}[/bold] v{saga.definition_version} {saga.id}  "
        f"{_status(saga.status)}  created {_when(saga.created_at)}"
    )
    steps = Table("step", "status", "attempt", "comp.", "deadline", "error", title="steps")
    for s in saga.steps:
        error = s.error or {}
        steps.add_row(
            s.name,
            s.status,
            str(s.attempt),
            str(s.compensation_attempt),
            _when(s.deadline),
            f"{error.get('code', '')} {error.get('message', '')}".strip(),
        )
    out.print(steps)
    timeline = Table("at", "event", "step", "detail", title="timeline")
    for e in saga.timeline:
        detail = ", ".join(f"{k}={v}" for k, v in e.detail.items() if k != "input")
        timeline.add_row(_clock(e.at), e.kind, e.step or "", detail[:80])
    out.print(timeline)


def _act(url: str, token: str | None, act: Callable[[SagaClient], models.Saga]) -> None:
    with api(url, token) as client:
        saga = act(client)
    out.print(f"{saga.id} is now {_status(saga.status)}")


@app.command()
def abort(
    saga_id: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Compensate a saga now (before its pivot)."""
    _act(url, token, lambda client: client.abort(saga_id, reason))


@app.command()
def retry(
    saga_id: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Resume a failed saga."""
    _act(url, token, lambda client: client.retry(saga_id, reason))


@app.command()
def skip(
    saga_id: str,
    step: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Mark a failed saga's stuck compensation as done by hand."""
    _act(url, token, lambda client: client.skip(saga_id, step, reason))


@app.command()
def fence(
    saga_id: str,
    step: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Settle a step waiting on a resolve as never applied, its participant unable to say."""
    _act(url, token, lambda client: client.fence(saga_id, step, reason))


@app.command()
def watch(
    saga_id: str,
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
    interval: Annotated[
        float, typer.Option(min=0.1, help="seconds between polls, if the stream is unavailable")
    ] = 1.0,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600,
) -> None:
    """Follow a saga's timeline, live, until it is final."""
    with api(url, token, poll_s=interval) as client:
        try:
            for e in client.events(saga_id, timeout=timeout):
                out.print(f"{_clock(e.at)}  {e.kind:<24} {e.step or ''}", highlight=False)
        except WaitTimeoutError:
            fail(f"{saga_id} is still {client.get(saga_id).status} after {timeout}s")
        status = client.get(saga_id).status
    out.print(f"{saga_id} is {_status(status)}")


@app.command()
def stats(url: Url = "http://127.0.0.1:8000", token: Token = None) -> None:
    """Counts by status and type, the oldest running saga, the outbox backlog, the parked
    and overdue sagas, and those waiting on a participant's resolve."""
    with api(url, token) as client:
        data = client.stats()
    table = Table("type", *STATUS_STYLE)
    for saga_type, counts in sorted(data.by_type.items()):
        table.add_row(saga_type, *(str(counts.get(s, 0)) for s in STATUS_STYLE))
    table.add_row("[bold]all[/bold]", *(str(data.by_status.get(s, 0)) for s in STATUS_STYLE))
    out.print(table)
    oldest = data.oldest_running
    out.print(
        f"oldest running: {oldest.id} since {_when(oldest.created_at)}"
        if oldest
        else "oldest running: none"
    )
    out.print(f"outbox backlog: {data.outbox_backlog}")
    out.print(f"parked for an operator: {data.parked} sagas, {data.outbox_parked} outbox rows")
    overdue = data.overdue
    by_type = ", ".join(f"{t} {n}" for t, n in sorted(overdue.by_type.items()))
    out.print(
        f"overdue by over {overdue.after_s:g} s (no running worker fires them): "
        f"{overdue.total}" + (f" ({by_type})" if by_type else "")
    )
    resolving = data.resolving
    by_step = ", ".join(f"{s} {n}" for s, n in sorted(resolving.by_step.items()))
    out.print(
        "waiting on a participant to resolve a step: "
        f"{resolving.total}" + (f" ({by_step})" if by_step else "")
    )
