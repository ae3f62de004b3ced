"""The Jaeger fixture works: spans exported with the OTel SDK come back with tree and attributes."""

from __future__ import annotations

import json
import os
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.jaeger import Jaeger, JaegerError


def test_span_tree_round_trips_over_otlp_grpc(jaeger: Jaeger) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-obo-smoke"}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=jaeger.otlp_grpc_endpoint, insecure=True))
    )
    tracer = provider.get_tracer("tests.telemetry.smoke")
    try:
        with tracer.start_as_current_span(
            "smoke.root",
            kind=SpanKind.SERVER,
            attributes={"rpc.method": "Echo", "smoke.count": 3, "smoke.flag": True},
        ) as root:
            with tracer.start_as_current_span("smoke.child", kind=SpanKind.CLIENT) as child:
                child.set_attribute("grpc_obo.token.source", "cache")
                with tracer.start_as_current_span("smoke.grandchild") as grandchild:
                    grandchild.set_status(Status(StatusCode.ERROR, "refused"))
                    grandchild.add_event("refusal", {"error.type": "expired"})
            with tracer.start_as_current_span("smoke.sibling"):
                pass
    finally:
        provider.shutdown()  # flushes the batch

    trace = jaeger.fetch_trace(root.get_span_context().trace_id, expect_spans=4)

    assert trace.names() == ["smoke.child", "smoke.grandchild", "smoke.root", "smoke.sibling"]
    [top] = trace.roots()
    assert top["name"] == "smoke.root"
    assert top["kind"] == "SERVER"
    assert top["service_name"] == "grpc-obo-smoke"
    assert top["attributes"] == {"rpc.method": "Echo", "smoke.count": 3, "smoke.flag": True}
    assert top["span_id"] == format(root.get_span_context().span_id, "016x")
    assert sorted(s["name"] for s in trace.children(top)) == ["smoke.child", "smoke.sibling"]

    middle = trace.one("smoke.child")
    assert middle["kind"] == "CLIENT"
    assert middle["attributes"] == {"grpc_obo.token.source": "cache"}
    assert [s["name"] for s in trace.children(middle)] == ["smoke.grandchild"]

    leaf = trace.one("smoke.grandchild")
    assert leaf["parent_span_id"] == format(child.get_span_context().span_id, "016x")
    assert leaf["kind"] == "INTERNAL"
    assert (leaf["status"], leaf["status_message"]) == ("ERROR", "refused")
    assert leaf["events"][0]["name"] == "refusal"
    assert leaf["events"][0]["attributes"] == {"error.type": "expired"}
    assert top["start_ns"] <= middle["start_ns"] <= leaf["end_ns"] <= top["end_ns"]
    assert {s["trace_id"] for s in trace.spans} == {trace.trace_id}
    assert "smoke.grandchild" in trace.raw


def test_otlp_http_receiver_accepts_spans(jaeger: Jaeger) -> None:
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "smoke-http"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "smoke.http",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }
    request = urllib.request.Request(
        jaeger.otlp_http_traces_url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        assert response.status == 200

    [span] = jaeger.fetch_trace(trace_id).spans
    assert (span["name"], span["span_id"], span["service_name"]) == (
        "smoke.http",
        span_id,
        "smoke-http",
    )


def test_fetch_trace_gives_up_in_time_and_says_so(jaeger: Jaeger) -> None:
    with pytest.raises(JaegerError, match="Jaeger has nothing"):
        jaeger.fetch_trace(os.urandom(16).hex(), timeout=0.3)
