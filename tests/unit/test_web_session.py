"""Dashboard sessions: signed, expiring, revocable, and CSRF tokens tied to them."""

from __future__ import annotations

import pytest

from orchestrator.api.session import Sessions

NOW = 1_800_000_000.0


@pytest.fixture
def sessions() -> Sessions:
    return Sessions("a-session-secret-of-some-length", ttl_s=3600)


def test_a_session_opens_until_it_expires(sessions: Sessions) -> None:
    cookie = sessions.issue(sessions.fingerprint("operator-token-1"), now=NOW)

    opened = sessions.open(cookie, now=NOW + 3599)
    assert opened is not None
    assert opened["fingerprint"] == sessions.fingerprint("operator-token-1")
    assert sessions.open(cookie, now=NOW + 3600) is None


def test_the_cookie_does_not_hold_the_token(sessions: Sessions) -> None:
    cookie = sessions.issue(sessions.fingerprint("operator-token-1"), now=NOW)

    assert "operator-token-1" not in cookie
    assert "operator-token-1" not in str(sessions.open(cookie, now=NOW))


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-1] + ("0" if c[-1] != "0" else "1"),
        lambda c: "e" + c,
        lambda c: c.partition(".")[0],
        lambda c: c.partition(".")[0] + ".",
        lambda c: "",
        lambda c: "x" * 5000,
        lambda c: "\x00." + c.partition(".")[2],
    ],
)
def test_a_tampered_cookie_opens_nothing(sessions: Sessions, tamper: object) -> None:
    cookie = sessions.issue(sessions.fingerprint("operator-token-1"), now=NOW)

    assert callable(tamper)
    assert sessions.open(tamper(cookie), now=NOW) is None


def test_another_secret_does_not_open_the_cookie(sessions: Sessions) -> None:
    cookie = sessions.issue(sessions.fingerprint("operator-token-1"), now=NOW)

    assert Sessions("another-secret-of-some-length", 3600).open(cookie, now=NOW) is None


def test_a_revoked_session_opens_no_more(sessions: Sessions) -> None:
    cookie = sessions.issue(sessions.fingerprint("operator-token-1"))
    other = sessions.issue(sessions.fingerprint("operator-token-1"))
    opened = sessions.open(cookie)
    assert opened is not None

    sessions.revoke(opened)

    assert sessions.open(cookie) is None
    assert sessions.open(other) is not None


def test_a_csrf_token_is_valid_for_its_session_only(sessions: Sessions) -> None:
    token = sessions.csrf_token("session-a")

    assert sessions.csrf_valid("session-a", token)
    assert not sessions.csrf_valid("session-b", token)
    assert not sessions.csrf_valid("session-a", "")
    assert not sessions.csrf_valid("session-a", token[:-1])


def test_without_a_secret_each_process_signs_with_its_own() -> None:
    first, second = Sessions("", 3600), Sessions("", 3600)
    cookie = first.issue(first.fingerprint("operator-token-1"))

    assert first.open(cookie) is not None
    assert second.open(cookie) is None
