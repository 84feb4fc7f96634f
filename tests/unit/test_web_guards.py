"""Host names the api answers, and the headers every answer carries."""

from __future__ import annotations

import pytest
from starlette.types import Message, Receive, Scope, Send

from orchestrator.api import guards


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("example.com", "example.com"),
        ("Example.COM:8000", "example.com"),
        ("[::1]:8000", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
        ("", ""),
    ],
)
def test_the_host_is_read_without_its_port(header: str, host: str) -> None:
    assert guards.host_of(header) == host


def test_by_default_only_this_machine_and_the_bind_host_are_trusted() -> None:
    allowed = guards.allowed_hosts("", "10.0.0.7")

    for host in ("localhost", "127.0.0.1", "::1", "10.0.0.7"):
        assert guards.host_matches(host, allowed)
    for host in ("evil.example", "localhost.evil.example", ""):
        assert not guards.host_matches(host, allowed)


def test_configured_hosts_allow_wildcard_subdomains() -> None:
    allowed = guards.allowed_hosts("sagas.example.com, *.ops.example.com", "0.0.0.0")

    assert guards.host_matches("sagas.example.com", allowed)
    assert guards.host_matches("a.ops.example.com", allowed)
    assert not guards.host_matches("ops.example.com.evil.example", allowed)
    assert not guards.host_matches("localhost", allowed)
    assert guards.host_matches("anything", guards.allowed_hosts("*", "0.0.0.0"))


async def answer(app: object, path: str, host: str) -> tuple[int, dict[str, str]]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "path": path, "headers": [(b"host", host.encode())]}
    assert callable(app)
    await app(scope, receive, send)
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def test_an_untrusted_host_is_refused_except_on_the_probes() -> None:
    app = guards.TrustedHosts(ok, guards.allowed_hosts("", "127.0.0.1"))

    assert (await answer(app, "/sagas", "evil.example"))[0] == 400
    assert (await answer(app, "/ui", "evil.example:8000"))[0] == 400
    assert (await answer(app, "/sagas", "127.0.0.1:8000"))[0] == 200
    assert (await answer(app, "/healthz", "10.1.2.3:8000"))[0] == 200
    assert (await answer(app, "/metrics", "10.1.2.3:8000"))[0] == 200


async def test_every_answer_carries_the_security_headers() -> None:
    app = guards.SecurityHeaders(guards.TrustedHosts(ok, ("localhost",)))

    for path, host in (("/sagas", "localhost"), ("/ui", "localhost"), ("/x", "evil.example")):
        _, headers = await answer(app, path, host)
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
    assert (await answer(app, "/sagas", "localhost"))[1]["referrer-policy"] == "no-referrer"
    assert (await answer(app, "/ui", "localhost"))[1]["referrer-policy"] == "same-origin"
