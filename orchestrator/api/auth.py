"""Bearer tokens with two roles: a viewer reads, an operator also starts and acts on sagas.

Tokens come from SAGA_VIEWER_TOKENS and SAGA_OPERATOR_TOKENS as `name:token` (or just
`token`) separated by commas; the name is who the timeline says acted. The api takes a
bearer token only; the dashboard trades a token for a signed session cookie (session.py).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import ipaddress

from fastapi import HTTPException, Request

from orchestrator.api.session import COOKIE, Sessions
from orchestrator.settings import Settings, SettingsError


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._tokens: dict[str, Principal] = {}
        for role, spec in (
            (Role.VIEWER, settings.viewer_tokens),
            (Role.OPERATOR, settings.operator_tokens),
        ):
            for item in filter(None, (i.strip() for i in spec.split(","))):
                name, _, token = item.rpartition(":")
                if len(token) < 8:
                    raise SettingsError(
                        f"a {role.name.lower()} token must have 8 or more characters"
                    )
                label = (
                    name or f"{role.name.lower()}-{hashlib.sha256(token.encode()).hexdigest()[:6]}"
                )
                self._tokens[token] = Principal(label, role)
        self.sessions = Sessions(settings.session_secret, settings.session_ttl_s)
        self._by_fingerprint = {self.sessions.fingerprint(t): p for t, p in self._tokens.items()}
        self.insecure = settings.insecure_dev
        if self.insecure:
            _check_insecure_allowed(bool(self._tokens), settings.api_host)
        elif not self._tokens:
            raise SettingsError(
                "no SAGA_VIEWER_TOKENS or SAGA_OPERATOR_TOKENS configured: set them, "
                "or set SAGA_INSECURE_DEV=1 to serve the api without authentication "
                "on a loopback address"
            )

    def lookup(self, token: str) -> Principal | None:
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        return None

    def principal(self, request: Request) -> Principal | None:
        token = bearer(request)
        if token:
            return self.lookup(token)
        return Principal("anonymous", Role.OPERATOR) if self.insecure else None

    def session(self, request: Request) -> tuple[Principal, dict[str, str]] | None:
        """The dashboard's signed-in user and their session, from the session cookie."""
        if self.insecure:
            return Principal("anonymous", Role.OPERATOR), {"sid": "insecure", "exp": "0"}
        token = bearer(request)
        if token:  # a script reading pages; no browser adds this header to a forged request
            principal = self.lookup(token)
            sid = "bearer:" + self.sessions.fingerprint(token)
            return (principal, {"sid": sid, "exp": "0"}) if principal else None
        opened = self.sessions.open(request.cookies.get(COOKIE))
        principal = self._by_fingerprint.get(opened["fingerprint"]) if opened else None
        return (principal, opened) if principal is not None and opened is not None else None

    def require(self, request: Request, role: Role) -> Principal:
        principal = self.principal(request)
        if principal is None:
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )
        if principal.role < role:
            raise HTTPException(403, f"this needs the {role.name.lower()} role")
        return principal


def _check_insecure_allowed(tokens_configured: bool, host: str) -> None:
    """Every caller is an operator without authentication: only on this machine, and never
    next to tokens, which would suggest a protection that is not there."""
    if tokens_configured:
        raise SettingsError(
            "SAGA_INSECURE_DEV=1 is set together with SAGA_VIEWER_TOKENS or "
            "SAGA_OPERATOR_TOKENS: unset SAGA_INSECURE_DEV to require the tokens"
        )
    if not is_loopback(host):
        raise SettingsError(
            f"SAGA_INSECURE_DEV=1 serves the api without authentication, which is allowed "
            f"only on a loopback address, not SAGA_API_HOST={host}: configure "
            "SAGA_OPERATOR_TOKENS / SAGA_VIEWER_TOKENS, or bind 127.0.0.1"
        )


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def viewer(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    return auth.require(request, Role.VIEWER)


async def operator(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    return auth.require(request, Role.OPERATOR)
