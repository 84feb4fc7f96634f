"""The dashboard's signed, expiring sessions and the CSRF tokens tied to them.

A session cookie holds no token: a fingerprint of it (so that removing a token from the
configuration ends its sessions), an expiry and a random id, signed with HMAC-SHA256.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse

import structlog
from fastapi import Request

log = structlog.get_logger(__name__)

COOKIE = "saga_session"
LOGIN_COOKIE = "saga_login"  # a random nonce that the login form's CSRF token answers
_MAX_REVOKED = 100_000


class Sessions:
    def __init__(self, secret: str, ttl_s: int) -> None:
        if not secret:
            log.warning(
                "session_secret_generated",
                detail="no SAGA_SESSION_SECRET: dashboard sessions end when this process "
                "stops and are not shared with other api processes",
            )
            secret = secrets.token_urlsafe(32)
        self._key = hashlib.sha256(b"saga-session:" + secret.encode()).digest()
        self.ttl_s = ttl_s
        self._revoked: dict[str, float] = {}  # session id -> its expiry

    def fingerprint(self, token: str) -> str:
        return self._mac("token:" + token)[:32]

    def issue(self, fingerprint: str, now: float | None = None) -> str:
        payload = {
            "f": fingerprint,
            "exp": int((now or time.time()) + self.ttl_s),
            "sid": secrets.token_urlsafe(12),
        }
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
        return f"{body}.{self._mac('session:' + body)}"

    def open(self, cookie: str | None, now: float | None = None) -> dict[str, str] | None:
        """The session's fingerprint and id, if the cookie is one this process signed and
        it has not expired or been logged out of."""
        if not cookie or len(cookie) > 1000:
            return None
        body, _, signature = cookie.partition(".")
        if not hmac.compare_digest(signature.encode(), self._mac("session:" + body).encode()):
            return None
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if payload["exp"] <= (now or time.time()) or payload["sid"] in self._revoked:
            return None
        return {"fingerprint": payload["f"], "sid": payload["sid"], "exp": payload["exp"]}

    def revoke(self, session: dict[str, str]) -> None:
        now = time.time()
        if len(self._revoked) >= _MAX_REVOKED:
            self._revoked = {s: exp for s, exp in self._revoked.items() if exp > now}
        self._revoked[session["sid"]] = float(session["exp"])

    def csrf_token(self, session_id: str) -> str:
        return self._mac("csrf:" + session_id)

    def csrf_valid(self, session_id: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(session_id).encode(), token.encode())

    def _mac(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """The form was posted from a page of this site: its Origin, else its Referer, names
    the scheme and host the request came to."""
    own = f"{request.url.scheme}://{request.headers.get('host', '')}".lower()
    origin = request.headers.get("origin")
    if origin is None:
        referer = urllib.parse.urlsplit(request.headers.get("referer", ""))
        origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else None
    return origin is not None and origin.lower() == own


def secure(request: Request) -> bool:
    return request.url.scheme == "https"
