"""The web surface as an attacker meets it: every query parameter and path id of the api and
the dashboard, fed NULs, huge numbers, `urn:uuid:` ids, nested JSON cursors, unicode and
10 KB strings, answers 4xx naming what was wrong, never 5xx; bodies are cut off at their
limit; the dashboard's sessions, CSRF tokens and headers; hosts; per-caller idempotency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.e2e.kafka import dead
from tests.e2e.orders import order
from tests.e2e.system import OPERATOR_TOKEN, System, free_port, wait_for

pytestmark = pytest.mark.e2e

A_UUID = "12345678-1234-5678-1234-567812345678"


def _cursor(value: Any) -> str:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


HOSTILE = [
    "\x00",
    "a\x00b",
    "99999999999999999999999999",
    "-99999999999999999999999999",
    "1e308",
    "NaN",
    f"urn:uuid:{A_UUID}",
    "{" + A_UUID.replace("-", "") + "}",
    A_UUID.upper().replace("-", ""),
    "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
    _cursor(["2024-01-01T00:00:00+00:00", "not-a-uuid"]),
    _cursor(["2024-01-01T00:00:00", A_UUID]),
    _cursor(b"[" * 5000 + b"]" * 5000),
    _cursor({"a": [1, 2]}),
    "1000000d",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+14:00",
    "\U0001d518\u202e\ud7ff\ufeff\u00e9",  # astral, bidi override, BOM
    "x" * 10_240,
    "%",
    "' OR 1=1 --",
]

QUERY_PARAMETERS = {
    "/sagas": [
        "status",
        "type",
        "created_after",
        "created_before",
        "updated_before",
        "stuck_for",
        "parked",
        "overdue",
        "resolving",
        "limit",
        "cursor",
    ],
    f"/sagas/{A_UUID}/timeline": ["after", "limit"],
    "/ui": ["status", "cursor", "done", "error"],
    "/ui/login": ["error"],
}

ID_PATHS = [
    ("GET", "/sagas/{}"),
    ("GET", "/sagas/{}/timeline"),
    ("POST", "/sagas/{}/abort"),
    ("POST", "/sagas/{}/retry"),
    ("POST", "/sagas/{}/steps/charge/skip"),
    ("POST", "/sagas/{}/steps/charge/fence"),
    ("POST", f"/sagas/{A_UUID}/steps/{{}}/skip"),
    ("GET", "/ui/sagas/{}"),
    ("POST", "/ui/sagas/{}/abort"),
    ("POST", f"/ui/sagas/{A_UUID}/{{}}"),
]


def _no_server_error(response: httpx.Response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def browser_client(system: System) -> httpx.Client:
    """What a browser sends: cookies and its page's Origin, no bearer token."""
    return httpx.Client(base_url=system.url, timeout=10, headers={"Origin": system.url})


@contextlib.contextmanager
def signed_in(system: System, token: str) -> Iterator[httpx.Client]:
    with browser_client(system) as client:
        login = client.post("/ui/login", data={"token": token, **form(client, "/ui/login")})
        assert login.status_code == 303, login.text[:300]
        assert login.headers["location"] == "/ui"
        yield client


def form(client: httpx.Client, page: str = "/ui", **fields: str) -> dict[str, str]:
    """The fields of a form on `page`, with its CSRF token."""
    match = _CSRF.search(client.get(page).text)
    assert match is not None, f"no CSRF token on {page}"
    return {"csrf": match[1], **fields}


@pytest.fixture(scope="module")
def browser(system: System) -> Iterator[httpx.Client]:
    with signed_in(system, OPERATOR_TOKEN) as client:
        yield client


def test_no_query_parameter_gives_a_server_error(system: System, browser: httpx.Client) -> None:
    answered = 0
    for path, names in QUERY_PARAMETERS.items():
        client = browser if path.startswith("/ui") else system.api
        for name in names:
            for value in HOSTILE:
                response = client.get(path, params={name: value})
                _no_server_error(response, f"{path}?{name}={value[:40]!r}")
                answered += 1
    assert answered == sum(len(n) for n in QUERY_PARAMETERS.values()) * len(HOSTILE)


def test_no_path_id_gives_a_server_error(system: System, browser: httpx.Client) -> None:
    for method, template in ID_PATHS:
        client = browser if template.startswith("/ui") else system.api
        for value in HOSTILE:
            path = template.format(urllib.parse.quote(value, safe=""))
            if method == "GET":
                response = client.get(path)
            elif template.startswith("/ui"):
                response = client.post(path, data=form(client, reason="fuzz"))
            else:
                response = client.post(path, json={"reason": "fuzz"})
            _no_server_error(response, f"{method} {template} with {value[:40]!r}")


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        (f"/sagas?cursor={_cursor(['2024-01-01T00:00:00+00:00', 'nope'])}", "cursor"),
        (f"/sagas?cursor={_cursor(b'[' * 5000 + b']' * 5000)}", "cursor"),
        ("/sagas?stuck_for=1000000d", "duration"),
        ("/sagas?type=a%00b", "type"),
        (f"/sagas/{A_UUID}/timeline?after=99999999999999999999", "after"),
        ("/sagas?limit=100000", "limit"),
    ],
)
def test_a_malformed_parameter_is_refused_by_name(
    system: System, path: str, parameter: str
) -> None:
    response = system.api.get(path)

    assert response.status_code == 422
    assert parameter in json.dumps(response.json()["error"])


def test_an_id_postgres_would_refuse_is_simply_not_found(system: System) -> None:
    for path in (f"/sagas/urn:uuid:{A_UUID}", f"/sagas/urn:uuid:{A_UUID}/timeline"):
        assert system.api.get(path).status_code == 404
    abort = system.api.post(f"/sagas/urn:uuid:{A_UUID}/abort", json={"reason": "x"})
    assert abort.status_code == 404


def test_a_naive_time_mixed_with_stuck_for_lists_sagas(system: System) -> None:
    response = system.api.get(
        "/sagas", params={"updated_before": "2999-01-01T00:00:00", "stuck_for": "1h"}
    )

    assert response.status_code == 200
    assert "items" in response.json()


def test_a_nul_in_the_input_is_refused_not_stored(system: System) -> None:
    before = system.scalar("SELECT count(*) FROM saga")
    response = system.api.post(
        "/sagas", json={"type": "order", "input": {**order("SKU-RED"), "orderId": "a\x00b"}}
    )

    assert response.status_code == 422
    assert system.scalar("SELECT count(*) FROM saga") == before


@pytest.mark.parametrize("key", [b"", b"cl\xc3\xa9", b"x" * 201])
def test_an_unusable_idempotency_key_is_refused_by_name(system: System, key: bytes) -> None:
    before = system.scalar("SELECT count(*) FROM saga")
    response = system.api.post(
        "/sagas",
        json={"type": "order", "input": order("SKU-RED")},
        headers={b"Idempotency-Key": key},
    )

    assert response.status_code == 422
    assert "idempotency" in json.dumps(response.json()["error"]).lower()
    assert system.scalar("SELECT count(*) FROM saga") == before


def test_a_422_for_thousands_of_unknown_keys_is_bounded(system: System) -> None:
    body = {"type": "order", "input": {**order("SKU-RED"), **{f"k{i}": 1 for i in range(20_000)}}}

    response = system.api.post("/sagas", json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert len(error["details"]) == 20
    assert "20000 problems" in error["message"]
    assert len(response.content) < 10_000


def test_the_connection_serves_the_next_request_after_a_refusal(system: System) -> None:
    with httpx.Client(
        base_url=system.url, headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    ) as client:
        refused = client.get("/sagas", params={"cursor": "\x00"})
        after = client.get("/healthz")

    assert refused.status_code == 422
    assert after.status_code == 200


def test_a_chunked_body_without_a_token_is_refused_before_it_ends(system: System) -> None:
    """2 MB of a body that never ends: the 413 arrives while the client is still sending."""
    host, port = system.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /sagas HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"a" * 65_536
        for _ in range(32):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        while b"}}" not in answer and (more := conn.recv(65_536)):
            answer += more

    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in rest


def test_the_session_cookie_is_signed_http_only_strict_and_holds_no_token(
    system: System,
) -> None:
    with signed_in(system, OPERATOR_TOKEN) as client:
        cookie = next(c for c in client.cookies.jar if c.name == "saga_session")

        assert OPERATOR_TOKEN not in str(cookie.value)
        assert cookie.has_nonstandard_attr("HttpOnly")
        assert cookie.get_nonstandard_attr("SameSite") == "strict"
        assert cookie.path == "/ui"
        assert cookie.expires is not None
        assert client.get("/ui").status_code == 200


def test_the_session_cookie_does_not_authenticate_the_api(system: System) -> None:
    with signed_in(system, OPERATOR_TOKEN) as client:
        value = client.cookies["saga_session"]
    with httpx.Client(base_url=system.url, cookies={"saga_session": value}) as anonymous:
        assert anonymous.get("/sagas").status_code == 401
        started = anonymous.post("/sagas", json={"type": "order", "input": order("SKU-RED")})
        assert started.status_code == 401


def test_a_login_without_its_csrf_token_or_from_another_site_is_refused(
    system: System,
) -> None:
    with browser_client(system) as client:
        no_token = client.post("/ui/login", data={"token": OPERATOR_TOKEN})
        fields = form(client, "/ui/login", token=OPERATOR_TOKEN)
        elsewhere = client.post(
            "/ui/login", data=fields, headers={"Origin": "https://evil.example"}
        )
        no_origin = client.post("/ui/login", data=fields, headers={"Origin": ""})

        assert [r.status_code for r in (no_token, elsewhere, no_origin)] == [403, 403, 403]
        assert "saga_session" not in client.cookies
        assert client.post("/ui/login", data=fields).status_code == 303
        assert "saga_session" in client.cookies


def test_a_forged_abort_changes_no_saga(system: System) -> None:
    saga_id = system.api.post("/sagas", json={"type": "order", "input": order("SKU-RED")}).json()[
        "id"
    ]
    with signed_in(system, OPERATOR_TOKEN) as client:
        fields = form(client, f"/ui/sagas/{saga_id}", reason="forged")
        target = f"/ui/sagas/{saga_id}/abort"
        token = fields["csrf"]
        tampered = token[:-1] + ("0" if token[-1] != "0" else "1")
        answers = [
            client.post(target, data={"reason": "forged"}),
            client.post(target, data={**fields, "csrf": tampered}),
            client.post(target, data=fields, headers={"Origin": "https://evil.example"}),
            client.post(
                target,
                data=fields,
                headers={"Origin": "", "Referer": "https://evil.example/page"},
            ),
        ]

    assert [a.status_code for a in answers] == [403] * 4
    timeline = system.api.get(f"/sagas/{saga_id}/timeline").json()["items"]
    assert not any("forged" in json.dumps(entry) for entry in timeline)


def test_a_dashboard_action_with_its_csrf_token_is_recorded(system: System) -> None:
    saga_id = system.api.post("/sagas", json={"type": "order", "input": order("SKU-RED")}).json()[
        "id"
    ]
    with signed_in(system, OPERATOR_TOKEN) as client:
        fields = form(client, f"/ui/sagas/{saga_id}", reason="checked by hand")
        response = client.post(f"/ui/sagas/{saga_id}/retry", data=fields)

    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/ui/sagas/{saga_id}?")


def test_after_logout_the_old_cookie_opens_nothing(system: System) -> None:
    with signed_in(system, OPERATOR_TOKEN) as client:
        value = client.cookies["saga_session"]
        refused = client.post("/ui/logout", data={})
        still_in = client.get("/ui")
        out = client.post("/ui/logout", data=form(client))

    assert refused.status_code == 403
    assert still_in.status_code == 200
    assert out.status_code == 303
    with browser_client(system) as replay:
        replay.cookies.set("saga_session", value, path="/ui")
        after = replay.get("/ui")
    assert after.status_code == 303
    assert after.headers["location"] == "/ui/login"


def test_pages_and_answers_carry_the_security_headers(system: System) -> None:
    with signed_in(system, OPERATOR_TOKEN) as client:
        page = client.get("/ui")
    answer = system.api.get("/sagas")

    for response in (page, answer):
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "script-src" not in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == "no-store"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "<script" not in page.text


def test_an_unknown_host_is_refused_but_probes_answer(system: System) -> None:
    evil = {"Host": "rebound.evil.example"}

    assert system.api.get("/sagas", headers=evil).status_code == 400
    assert system.api.get("/ui/login", headers=evil).status_code == 400
    assert system.api.get("/healthz", headers=evil).status_code == 200
    assert system.api.get("/sagas", headers={"Host": "localhost"}).status_code == 200


def test_the_api_docs_load_nothing_from_a_cdn(system: System) -> None:
    assert system.api.get("/docs").status_code == 404
    assert system.api.get("/redoc").status_code == 404
    assert system.api.get("/openapi.json").json()["info"]["title"] == "Saga orchestrator"


OTHER_TOKEN = "other-operator-token"


@pytest.fixture(scope="module")
def second_api(system: System) -> Iterator[httpx.Client]:
    """Another api on the same database, with two operators and keys that expire in 3 s."""
    port = free_port()
    system.start(
        "api-two",
        "orchestrator",
        "api",
        env={
            "SAGA_API_PORT": str(port),
            "SAGA_OPERATOR_TOKENS": f"tester:{OPERATOR_TOKEN},other:{OTHER_TOKEN}",
            "SAGA_IDEMPOTENCY_TTL_S": "3",
        },
    )
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, timeout=10) as client:

        def ready() -> bool:
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 30, "the second api")
        yield client
    system.stop("api-two")


def start(client: httpx.Client, token: str, key: str, sku: str = "SKU-RED") -> httpx.Response:
    return client.post(
        "/sagas",
        json={"type": "order", "input": order(sku)},
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
    )


def test_idempotency_keys_belong_to_their_caller(second_api: httpx.Client) -> None:
    key = f"k-{uuid.uuid4()}"
    mine = start(second_api, OPERATOR_TOKEN, key)
    theirs = start(second_api, OTHER_TOKEN, key)
    mine_again = second_api.post(
        "/sagas",
        json={"type": "order", "input": {**order("SKU-RED"), "orderId": "changed"}},
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Idempotency-Key": key},
    )

    assert (mine.status_code, theirs.status_code) == (202, 202)
    assert mine.json()["id"] != theirs.json()["id"]
    assert mine_again.status_code == 409
    assert mine.json()["id"] not in mine_again.text
    assert theirs.json()["id"] not in mine_again.text


def test_an_expired_idempotency_key_starts_a_new_saga(second_api: httpx.Client) -> None:
    key = f"k-{uuid.uuid4()}"
    first = start(second_api, OPERATOR_TOKEN, key)
    repeated = second_api.post(
        "/sagas",
        content=first.request.content,
        headers={
            "Authorization": f"Bearer {OPERATOR_TOKEN}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
    )
    time.sleep(3.5)
    after_expiry = second_api.post(
        "/sagas",
        content=first.request.content,
        headers={
            "Authorization": f"Bearer {OPERATOR_TOKEN}",
            "Idempotency-Key": key,
            "Content-Type": "application/json",
        },
    )

    assert first.status_code == 202
    assert (repeated.status_code, repeated.json()["id"]) == (200, first.json()["id"])
    assert after_expiry.status_code == 202
    assert after_expiry.json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SAGA_API_HOST": "0.0.0.0", "SAGA_OPERATOR_TOKENS": "", "SAGA_VIEWER_TOKENS": ""},
            "loopback",
        ),
        ({"SAGA_API_HOST": "127.0.0.1"}, "unset SAGA_INSECURE_DEV"),
    ],
)
def test_insecure_dev_refuses_to_start_where_it_would_expose_the_api(
    system: System, env: dict[str, str], says: str
) -> None:
    name = f"api-insecure-{says.split()[0]}"
    system.start(
        name,
        "orchestrator",
        "api",
        env={"SAGA_API_PORT": str(free_port()), "SAGA_INSECURE_DEV": "1", **env},
    )
    process = system.processes[name]

    assert process.wait(timeout=30) != 0
    assert says in (system.workdir / f"{name}.log").read_text()


def dlq_cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "dlq", *args],
        env={**os.environ, **system.env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_dlq_replay_records_who_and_why(system: System) -> None:
    topic = f"{system.namespace}.audit-{uuid.uuid4().hex[:6]}"
    key = uuid.uuid4().hex
    asyncio.run(_dead_letter(system, topic, key))
    letter = wait_for(
        lambda: next((d for d in dead(system, topic) if d.key == key), None), 30, "the letter"
    )
    position = f"{letter.partition}:{letter.offset}"

    without_reason = dlq_cli(system, "replay", topic, position)
    empty_reason = dlq_cli(system, "replay", topic, position, "--reason", " ")
    replayed = dlq_cli(
        system, "replay", topic, position, "--reason", "fixed the schema", "--by", "alice"
    )

    assert without_reason.returncode == 2
    assert "--reason" in without_reason.stderr
    assert empty_reason.returncode != 0
    assert replayed.returncode == 0, replayed.stderr
    headers = asyncio.run(_headers_of_first(system, topic, key))
    assert headers["replayedBy"] == "alice"
    assert headers["replayReason"] == "fixed the schema"
    logged = replayed.stdout + replayed.stderr
    assert "dlq_replayed" in logged
    assert "alice" in logged
    assert "fixed the schema" in logged


async def _dead_letter(system: System, topic: str, key: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=system.kafka.split(","))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in (topic, topic + ".dlq")])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=system.kafka.split(","), acks="all")
    await producer.start()
    try:
        headers = [("original_topic", topic.encode()), ("failure_reason", b"test")]
        await producer.send_and_wait(topic + ".dlq", b"{}", key=key.encode(), headers=headers)
    finally:
        await producer.stop()


async def _headers_of_first(system: System, topic: str, key: str) -> dict[str, str]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=system.kafka.split(","),
        group_id=f"peek-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            async for record in consumer:
                if record.key == key.encode():
                    return {k: v.decode() for k, v in record.headers}
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")
