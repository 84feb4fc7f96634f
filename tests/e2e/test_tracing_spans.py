"""The spans of one order saga, as an OTLP collector receives them: one trace, from the
REST request through the saga, its commands, their handling and the replies."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.conftest import service_urls
from tests.e2e.orders import new_sku, order
from tests.e2e.system import System, wait_for

pytestmark = pytest.mark.e2e

COMMANDS = {
    "inventory.reserve": ("reserve_inventory", "saga-participant-inventory"),
    "payment.charge": ("charge_payment", "saga-participant-payment"),
    "shipping.create": ("create_shipment", "saga-participant-shipping"),
}


class Collector:
    """An OTLP/HTTP receiver of spans (protobuf), keeping them in memory."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path == "/v1/traces":
                    collector.receive(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        {
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "service": resource["service.name"],
                            "attributes": _attributes(span.attributes),
                            "error": span.status.code == span.status.STATUS_CODE_ERROR,
                        }
                    )
        with self._lock:
            self.spans.extend(received)

    def of_trace(self, trace_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def __enter__(self) -> Collector:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _attributes(pairs: Any) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[System, Collector]]:
    database_url, kafka = service_urls()
    workdir: Path = tmp_path_factory.mktemp("traced")
    with Collector() as collector:
        system = System(database_url, kafka, workdir)
        system.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
        system.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
        system.env.pop("OTEL_SERVICE_NAME", None)
        with system.running():
            yield system, collector


def test_the_spans_of_an_order_saga_form_one_tree(traced: tuple[System, Collector]) -> None:
    system, collector = traced
    saga_id = system.start_saga(order(new_sku(system, 10)))
    assert system.wait_final(saga_id)["status"] == "completed"
    trace_id = system.scalar("SELECT trace_id FROM saga WHERE id = %s", saga_id)

    wanted = {"POST /sagas", "saga order", "send saga.started", "send saga.completed"}
    for command in COMMANDS:
        wanted |= {f"send {command}", f"handle {command}", f"send {command}.reply"}
        wanted.add(f"apply {command}.reply")

    def all_arrived() -> list[dict[str, Any]] | None:
        spans = collector.of_trace(trace_id)
        return spans if wanted <= {s["name"] for s in spans} else None

    spans = wait_for(all_arrived, 30, "the saga's spans")
    assert {s["trace_id"] for s in spans} == {trace_id}
    ids = [s["span_id"] for s in spans]
    assert len(ids) == len(set(ids))
    (request,) = named(spans, "POST /sagas")
    (saga,) = named(spans, "saga order")
    assert request["service"] == "saga-api"
    assert request["attributes"]["http.response.status_code"] == 202
    assert saga["service"] == "saga-worker"
    assert saga["parent_id"] == request["span_id"]
    assert saga["attributes"] == {
        "saga.id": saga_id,
        "saga.type": "order",
        "saga.status": "completed",
    }
    assert not saga["error"]
    events = {s["name"] for s in spans if s["name"].startswith("send saga.")}
    assert events == {"send saga.started", "send saga.completed"}

    for command, (step, participant) in COMMANDS.items():
        (send,) = named(spans, f"send {command}")
        assert send["parent_id"] == saga["span_id"]
        assert send["attributes"]["step"] == step
        assert send["attributes"]["saga.id"] == saga_id
        # the command's span is the one its traceparent header names
        assert send["span_id"] == send["attributes"]["messaging.message.id"].replace("-", "")[:16]
        (handle,) = named(spans, f"handle {command}")
        assert handle["parent_id"] == send["span_id"]
        assert handle["service"] == participant
        assert handle["attributes"]["outcome"] == "success"
        (reply,) = named(spans, f"send {command}.reply")
        assert reply["parent_id"] == handle["span_id"]
        assert reply["service"] == participant
        (apply,) = named(spans, f"apply {command}.reply")
        assert apply["parent_id"] == reply["span_id"]
        assert apply["service"] == "saga-worker"
        assert apply["attributes"]["step"] == step
        assert apply["attributes"]["attempt"] == 1
        assert apply["attributes"]["outcome"] == "success"

    expected = 2 + 2 + 4 * len(COMMANDS)  # request, saga, two events, four per command
    assert len(spans) == expected, sorted(s["name"] for s in spans)


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def test_a_saga_of_a_batch_has_a_start_span_under_the_request(
    traced: tuple[System, Collector],
) -> None:
    system, collector = traced
    body = {"sagas": [{"type": "order", "input": order(new_sku(system, 10))}]}
    response = system.api.post("/sagas/batch", json=body)
    assert response.status_code == 200, response.text
    saga_id = response.json()["results"][0]["id"]
    assert system.wait_final(saga_id)["status"] == "completed"
    trace_id = system.scalar("SELECT trace_id FROM saga WHERE id = %s", saga_id)

    def arrived() -> list[dict[str, Any]] | None:
        spans = collector.of_trace(trace_id)
        names = {s["name"] for s in spans}
        return spans if {"POST /sagas/batch", "start order", "saga order"} <= names else None

    spans = wait_for(arrived, 30, "the saga's spans")
    (request,) = named(spans, "POST /sagas/batch")
    (start,) = named(spans, "start order")
    (saga,) = named(spans, "saga order")
    assert start["parent_id"] == request["span_id"]
    assert start["service"] == "saga-api"
    assert saga["parent_id"] == start["span_id"]
