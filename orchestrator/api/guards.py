"""Plain ASGI middleware every response goes through: the Host check and the security
headers (starlette's BaseHTTPMiddleware would cost every request a task and a stream)."""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.api import errors

# probes and scrapers call a pod by its address; these answers hold no saga's data (and
# SAGA_METRICS_TOKEN guards /metrics)
UNCHECKED_HOST_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# the one page that runs a script: the saga page, which follows its saga live. Only files of
# this origin (nothing inline, no eval), reading streams of this origin.
LIVE_PAGE_CSP = _CSP + "; script-src 'self'; connect-src 'self'"
HEADERS = {
    "content-security-policy": _CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def allowed_hosts(spec: str, bind_host: str) -> tuple[str, ...]:
    names = [h.strip().lower() for h in spec.split(",") if h.strip()]
    return tuple(names or ("localhost", "127.0.0.1", "::1", bind_host.lower().strip("[]")))


def host_of(header: str) -> str:
    """The name of a Host header without its port: `[::1]:8000` -> `::1`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


def host_matches(host: str, allowed: tuple[str, ...]) -> bool:
    for pattern in allowed:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class TrustedHosts:
    """Answers only requests for a known Host: a DNS-rebinding page cannot reach the
    dashboard through a name it controls."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self._app = app
        self._allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in UNCHECKED_HOST_PATHS:
            host = host_of(Headers(scope=scope).get("host", ""))
            if not host_matches(host, self._allowed):
                response = errors.error_response(
                    400, "untrusted_host", "the Host header names no host this api serves"
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


class SecurityHeaders:
    """No framing, no sniffing, no caching of saga data, a CSP without scripts (a page that
    sets its own, the saga page, keeps it); the dashboard sends its Referer only to itself,
    so that its forms keep their Origin."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        dashboard = scope["path"].startswith("/ui")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault(
                    "referrer-policy", "same-origin" if dashboard else "no-referrer"
                )
            await send(message)

        await self._app(scope, receive, with_headers)
