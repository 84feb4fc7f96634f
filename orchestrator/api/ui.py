"""The dashboard: server-rendered pages over the same service, reader and tokens as the api."""

from __future__ import annotations

import secrets
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.templating import Jinja2Templates

from orchestrator.api import auth, diagram_svg, guards, session, stream
from orchestrator.api.routes import Reader, Sagas, is_uuid
from orchestrator.saga.errors import OrchestratorError
from orchestrator.saga.machine import SagaStatus
from orchestrator.store.queries import SagaFilter

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
LIVE_SCRIPT = (Path(__file__).parent / "static" / "saga-live.js").read_bytes()
PAGE = 25


def _signed_in(request: Request) -> tuple[auth.Principal, dict[str, str]] | None:
    authenticator: auth.Authenticator = request.app.state.auth
    return authenticator.session(request)


def _who(request: Request) -> auth.Principal | None:
    signed_in = _signed_in(request)
    return signed_in[0] if signed_in else None


def _sessions(request: Request) -> session.Sessions:
    authenticator: auth.Authenticator = request.app.state.auth
    return authenticator.sessions


def _page(request: Request, name: str, **context: Any) -> HTMLResponse:
    flash = request.query_params.get("done") or request.query_params.get("error")
    kind = "ok" if "done" in request.query_params else "error"
    signed_in = _signed_in(request)
    csrf = _sessions(request).csrf_token(signed_in[1]["sid"]) if signed_in else ""
    return templates.TemplateResponse(
        request,
        name,
        {
            "who": signed_in[0] if signed_in else None,
            "csrf": csrf,
            "flash": flash[:200] if flash else None,
            "flash_kind": kind,
            **context,
        },
    )


def _forged(request: Request) -> HTMLResponse:
    page = _page(
        request,
        "login.html",
        csrf="",
        flash="the form was not sent from this site; reload the page and try again",
        flash_kind="error",
    )
    page.status_code = 403
    return page


@router.get("/login")
async def login_page(request: Request) -> HTMLResponse:
    nonce = request.cookies.get(session.LOGIN_COOKIE) or secrets.token_urlsafe(16)
    page = _page(request, "login.html", csrf=_sessions(request).csrf_token("login:" + nonce))
    page.set_cookie(
        session.LOGIN_COOKIE,
        nonce,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=session.secure(request),
        path="/ui",
    )
    return page


@router.post("/login")
async def login(
    request: Request,
    token: Annotated[str, Form(max_length=1000)],
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    sessions = _sessions(request)
    nonce = request.cookies.get(session.LOGIN_COOKIE, "")
    if not (
        session.same_origin(request) and nonce and sessions.csrf_valid("login:" + nonce, csrf)
    ):
        return _forged(request)
    authenticator: auth.Authenticator = request.app.state.auth
    if authenticator.lookup(token) is None:
        return RedirectResponse("/ui/login?error=unknown+token", status_code=303)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(
        session.COOKIE,
        sessions.issue(sessions.fingerprint(token)),
        max_age=sessions.ttl_s,
        httponly=True,
        samesite="strict",
        secure=session.secure(request),
        path="/ui",
    )
    response.delete_cookie(session.LOGIN_COOKIE, path="/ui")
    return response


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=200)] = "") -> Response:
    signed_in = _signed_in(request)
    if signed_in is None:
        return RedirectResponse("/ui/login", status_code=303)
    if not _form_is_genuine(request, signed_in[1], csrf):
        return _forged(request)
    _sessions(request).revoke(signed_in[1])
    response = RedirectResponse("/ui/login?done=signed+out", status_code=303)
    response.delete_cookie(session.COOKIE, path="/ui")
    return response


def _form_is_genuine(request: Request, current: dict[str, str], csrf: str) -> bool:
    return session.same_origin(request) and _sessions(request).csrf_valid(current["sid"], csrf)


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
    view = await reads.saga_view(saga_id) if is_uuid(saga_id) else None
    if view is None:
        page = _page(
            request,
            "list.html",
            sagas=[],
            statuses=[],
            status=None,
            counts_text="",
            flash=f"no saga has id {saga_id[:100]}",
            flash_kind="error",
        )
        page.status_code = 404
        return page
    definition = sagas.definition(view["type"], view["definition_version"])
    statuses = {s["name"]: s["status"] for s in view["steps"]}
    timeline = view["timeline"]
    page = _page(
        request,
        "detail.html",
        saga=view,
        events_url=f"/ui/sagas/{view['id']}/events"
        + (f"?after={timeline[-1]['id']}" if timeline else ""),
        can_act=who.role >= auth.Role.OPERATOR,
        diagram=diagram_svg.render(definition, statuses, _current_step(view)),
    )
    page.headers["content-security-policy"] = guards.LIVE_PAGE_CSP  # its live script
    return page


async def _signed_in_viewer(request: Request) -> auth.Principal:
    who = _who(request)
    if who is None:
        raise HTTPException(401, "sign in to the dashboard first")
    return who


@router.get("/sagas/{saga_id}/events", response_class=EventSourceResponse)
async def saga_events(
    _: Annotated[auth.Principal, Depends(_signed_in_viewer)],
    followed: stream.Followed,
    reads: Reader,
    request: Request,
) -> AsyncIterator[ServerSentEvent]:
    """GET /sagas/{id}/events for the saga page, with its session cookie (which is scoped
    to /ui). Every entry is a `timeline` event: an EventSource hears a named event only
    with a listener for that name, and the kinds are not a closed set."""
    async for event in stream.events(reads, followed, stream.pacing(request), _timeline):
        yield event


def _timeline(entry: dict[str, Any]) -> str:
    return "timeline"


@router.get("/static/saga-live.js")
async def live_script() -> Response:
    return Response(
        LIVE_SCRIPT,
        media_type="text/javascript; charset=utf-8",
        headers={"cache-control": "no-cache"},
    )


@router.post("/sagas/{saga_id}/{action}")
async def act(
    request: Request,
    saga_id: str,
    action: str,
    reason: Annotated[str, Form(min_length=1, max_length=1000)],
    sagas: Sagas,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    signed_in = _signed_in(request)
    if signed_in is None:
        return RedirectResponse("/ui/login", status_code=303)
    who, current = signed_in
    if not _form_is_genuine(request, current, csrf):
        return _forged(request)
    if not is_uuid(saga_id):
        return RedirectResponse("/ui?error=no+such+saga", status_code=303)
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
