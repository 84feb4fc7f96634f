"""The dashboard: server-rendered pages over the same service, reader and tokens as the api."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from orchestrator.api import auth, diagram_svg
from orchestrator.api.routes import Reader, Sagas
from orchestrator.saga.errors import OrchestratorError
from orchestrator.saga.machine import SagaStatus
from orchestrator.store.queries import SagaFilter

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
PAGE = 25


def _who(request: Request) -> auth.Principal | None:
    authenticator: auth.Authenticator = request.app.state.auth
    return authenticator.principal(request)


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    flash = request.query_params.get("done") or request.query_params.get("error")
    kind = "ok" if "done" in request.query_params else "error"
    return templates.TemplateResponse(
        request, name, {"who": _who(request), "flash": flash, "flash_kind": kind, **context}
    )


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html")


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()]) -> Response:
    authenticator: auth.Authenticator = request.app.state.auth
    if authenticator.lookup(token) is None:
        return RedirectResponse("/ui/login?error=unknown+token", status_code=303)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(auth.COOKIE, token, httponly=True, samesite="strict")
    return response


@router.get("")
async def saga_list(request: Request, reads: Reader) -> Response:
    if _who(request) is None:
        return RedirectResponse("/ui/login", status_code=303)
    status = request.query_params.get("status")
    statuses = (status,) if status in {s.value for s in SagaStatus} else ()
    cursor = request.query_params.get("cursor")
    sagas, next_cursor = await reads.list_sagas(SagaFilter(statuses=statuses), PAGE, cursor)
    counts = (await reads.stats())["by_status"]
    query = urllib.parse.urlencode({"status": status or "", "cursor": next_cursor or ""})
    return _page(
        request,
        "list.html",
        sagas=sagas,
        status=status,
        statuses=[s.value for s in SagaStatus],
        next_cursor=next_cursor,
        next_query=query,
        counts_text=" · ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    )


@router.get("/sagas/{saga_id}")
async def saga_detail(request: Request, saga_id: str, reads: Reader, sagas: Sagas) -> Response:
    who = _who(request)
    if who is None:
        return RedirectResponse("/ui/login", status_code=303)
    view = await reads.saga_view(saga_id) if _looks_like_uuid(saga_id) else None
    if view is None:
        return _page(
            request,
            "list.html",
            sagas=[],
            statuses=[],
            status=None,
            counts_text="",
            flash=f"no saga has id {saga_id}",
            flash_kind="error",
        )
    definition = sagas.definition(view["type"], view["definition_version"])
    statuses = {s["name"]: s["status"] for s in view["steps"]}
    return _page(
        request,
        "detail.html",
        saga=view,
        can_act=who.role >= auth.Role.OPERATOR,
        diagram=diagram_svg.render(definition, statuses, _current_step(view)),
    )


@router.post("/sagas/{saga_id}/{action}")
async def act(
    request: Request, saga_id: str, action: str, reason: Annotated[str, Form()], sagas: Sagas
) -> Response:
    who = _who(request)
    if who is None:
        return RedirectResponse("/ui/login", status_code=303)
    target = f"/ui/sagas/{saga_id}"
    if who.role < auth.Role.OPERATOR or action not in ("abort", "retry"):
        return RedirectResponse(f"{target}?error=not+allowed", status_code=303)
    try:
        await sagas.operate(saga_id, action, who.name, reason)
    except OrchestratorError as exc:
        return RedirectResponse(f"{target}?{urllib.parse.urlencode({'error': exc.message})}", 303)
    return RedirectResponse(f"{target}?done={action}+accepted", status_code=303)


def _current_step(view: dict[str, Any]) -> str | None:
    """The step the saga waits on: the last one that moved and is not settled."""
    active = [
        s for s in view["steps"] if s["status"] not in ("pending", "succeeded", "compensated")
    ]
    if active:
        return str(max(active, key=lambda s: s["updated_at"])["name"])
    return None


def _looks_like_uuid(value: str) -> bool:
    return len(value) == 36 and value.count("-") == 4
