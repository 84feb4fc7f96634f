"""`orchestrator sagas ...`: the operator's command line, a client of the REST api."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator.saga import machine

app = typer.Typer(
    name="sagas", help="Query and act on sagas through the api.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)

SETTLED = tuple(s.value for s in machine.SETTLED)
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


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._client = httpx.Client(base_url=url, headers=headers, timeout=10)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            fail(f"cannot reach the api at {self.url}: {exc}")
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text or response.reason_phrase
            hint = {401: " (pass --token or set SAGA_API_TOKEN)"}.get(response.status_code, "")
            fail(f"{response.status_code}: {message}{hint}")
        return response.json()


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def _status(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _when(value: str | None) -> str:
    return value.replace("T", " ")[5:19] if value else "-"


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
    params: dict[str, Any] = {"limit": limit, "status": status or []}
    for key, value in {
        "type": saga_type,
        "created_after": created_after,
        "created_before": created_before,
        "updated_before": updated_before,
        "stuck_for": stuck_for,
        "parked": None if parked is None else str(parked).lower(),
        "overdue": None if overdue is None else str(overdue).lower(),
        "resolving": None if resolving is None else str(resolving).lower(),
        "cursor": cursor,
    }.items():
        if value is not None:
            params[key] = value.isoformat() if isinstance(value, datetime) else value
    page = Api(url, token).call("GET", "/sagas", params=params)
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)
    for name in ("type", "v", "status", "created", "updated"):
        table.add_column(name, no_wrap=True)
    for s in page["items"]:
        table.add_row(
            s["id"],
            s["type"],
            str(s["definition_version"]),
            _status(s["status"]) + (" [red]parked[/red]" if s.get("parked_at") else ""),
            _when(s["created_at"]),
            _when(s["updated_at"]),
        )
    out.print(table)
    if page["next_cursor"]:
        out.print(f"more: --cursor {page['next_cursor']}", highlight=False)


@app.command()
def show(saga_id: str, url: Url = "http://127.0.0.1:8000", token: Token = None) -> None:
    """A saga's steps and timeline."""
    _show(Api(url, token).call("GET", f"/sagas/{saga_id}"))


def _show(saga: dict[str, Any]) -> None:
    out.print(
        f"[bold]{saga['type']}[/bold] v{saga['definition_version']} {saga['id']}  "
        f"{_status(saga['status'])}  created {_when(saga['created_at'])}"
    )
    steps = Table("step", "status", "attempt", "comp.", "deadline", "error", title="steps")
    for s in saga["steps"]:
        error = s["error"] or {}
        steps.add_row(
            s["name"],
            s["status"],
            str(s["attempt"]),
            str(s["compensation_attempt"]),
            _when(s["deadline"]),
            f"{error.get('code', '')} {error.get('message', '')}".strip(),
        )
    out.print(steps)
    timeline = Table("at", "event", "step", "detail", title="timeline")
    for e in saga["timeline"]:
        detail = ", ".join(f"{k}={v}" for k, v in e["detail"].items() if k != "input")
        timeline.add_row(e["at"][11:23], e["kind"], e["step"] or "", detail[:80])
    out.print(timeline)


def _act(url: str, token: str | None, path: str, reason: str) -> None:
    saga = Api(url, token).call("POST", path, json={"reason": reason})
    out.print(f"{saga['id']} is now {_status(saga['status'])}")


@app.command()
def abort(
    saga_id: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Compensate a saga now (before its pivot)."""
    _act(url, token, f"/sagas/{saga_id}/abort", reason)


@app.command()
def retry(
    saga_id: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Resume a failed saga."""
    _act(url, token, f"/sagas/{saga_id}/retry", reason)


@app.command()
def skip(
    saga_id: str,
    step: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Mark a failed saga's stuck compensation as done by hand."""
    _act(url, token, f"/sagas/{saga_id}/steps/{step}/skip", reason)


@app.command()
def fence(
    saga_id: str,
    step: str,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why, for the record")],
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
) -> None:
    """Settle a step waiting on a resolve as never applied, its participant unable to say."""
    _act(url, token, f"/sagas/{saga_id}/steps/{step}/fence", reason)


@app.command()
def watch(
    saga_id: str,
    url: Url = "http://127.0.0.1:8000",
    token: Token = None,
    interval: Annotated[float, typer.Option(min=0.1)] = 1.0,
    timeout: Annotated[float, typer.Option(help="give up after this many seconds")] = 600,
) -> None:
    """Follow a saga's timeline until it is final."""
    api = Api(url, token)
    seen = 0
    deadline = time.monotonic() + timeout
    while True:
        saga = api.call("GET", f"/sagas/{saga_id}")
        for e in saga["timeline"][seen:]:
            out.print(f"{e['at'][11:23]}  {e['kind']:<24} {e['step'] or ''}", highlight=False)
        seen = len(saga["timeline"])
        if saga["status"] in SETTLED:
            out.print(f"{saga_id} is {_status(saga['status'])}")
            return
        if time.monotonic() > deadline:
            fail(f"{saga_id} is still {saga['status']} after {timeout}s")
        time.sleep(interval)


@app.command()
def stats(url: Url = "http://127.0.0.1:8000", token: Token = None) -> None:
    """Counts by status and type, the oldest running saga, the outbox backlog, the parked
    and overdue sagas, and those waiting on a participant's resolve."""
    data = Api(url, token).call("GET", "/sagas/stats")
    table = Table("type", *STATUS_STYLE)
    for saga_type, counts in sorted(data["by_type"].items()):
        table.add_row(saga_type, *(str(counts.get(s, 0)) for s in STATUS_STYLE))
    table.add_row("[bold]all[/bold]", *(str(data["by_status"].get(s, 0)) for s in STATUS_STYLE))
    out.print(table)
    oldest = data["oldest_running"]
    out.print(
        f"oldest running: {oldest['id']} since {_when(oldest['created_at'])}"
        if oldest
        else "oldest running: none"
    )
    out.print(f"outbox backlog: {data['outbox_backlog']}")
    out.print(
        f"parked for an operator: {data['parked']} sagas, {data['outbox_parked']} outbox rows"
    )
    overdue = data["overdue"]
    by_type = ", ".join(f"{t} {n}" for t, n in sorted(overdue["by_type"].items()))
    out.print(
        f"overdue by over {overdue['after_s']:g} s (no running worker fires them): "
        f"{overdue['total']}" + (f" ({by_type})" if by_type else "")
    )
    resolving = data["resolving"]
    by_step = ", ".join(f"{s} {n}" for s, n in sorted(resolving["by_step"].items()))
    out.print(
        "waiting on a participant to resolve a step: "
        f"{resolving['total']}" + (f" ({by_step})" if by_step else "")
    )
