"""Bearer tokens with two roles: a viewer reads, an operator also starts and acts on sagas.

Tokens come from SAGA_VIEWER_TOKENS and SAGA_OPERATOR_TOKENS as `name:token` (or just
`token`) separated by commas; the name is who the timeline says acted. The dashboard sends
the same token from a cookie.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac

from fastapi import HTTPException, Request

from orchestrator.settings import Settings, SettingsError

COOKIE = "saga_token"


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
        self.insecure = settings.insecure_dev
        if not self._tokens and not self.insecure:
            raise SettingsError(
                "no SAGA_VIEWER_TOKENS or SAGA_OPERATOR_TOKENS configured: set them, "
                "or set SAGA_INSECURE_DEV=1 to serve the api without authentication"
            )

    def lookup(self, token: str) -> Principal | None:
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        return None

    def principal(self, request: Request) -> Principal | None:
        token = _bearer(request) or request.cookies.get(COOKIE)
        if token:
            return self.lookup(token)
        return Principal("anonymous", Role.OPERATOR) if self.insecure else None

    def require(self, request: Request, role: Role) -> Principal:
        principal = self.principal(request)
        if principal is None:
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )
        if principal.role < role:
            raise HTTPException(403, f"this needs the {role.name.lower()} role")
        return principal


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def viewer(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    return auth.require(request, Role.VIEWER)


async def operator(request: Request) -> Principal:
    auth: Authenticator = request.app.state.auth
    return auth.require(request, Role.OPERATOR)
