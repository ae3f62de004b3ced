"""The HTTP auth among opentelemetry-instrumentation-httpx (instrumented before or after the
client is built): the exchange's span sits in the caller's trace, the downstream receives the
trace context and the token, and no exported span or metric holds a token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import grpc_obo
from tests.http.conftest import FAST, Users
from tests.http.downstream import Downstream
from tests.telemetry.otel import find_leaks


@pytest.fixture
def providers() -> Iterator[tuple[TracerProvider, InMemorySpanExporter, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    yield tracer_provider, exporter, reader
    tracer_provider.shutdown()


@pytest.mark.parametrize("instrumented", ["client_first", "instrumentor_first"])
async def test_the_http_hop_is_traced_with_the_exchange_and_without_tokens(
    providers: tuple[TracerProvider, InMemorySpanExporter, InMemoryMetricReader],
    client: grpc_obo.ConfidentialClient,
    users: Users,
    read: str,
    downstream: Downstream,
    instrumented: str,
) -> None:
    tracer_provider, exporter, reader = providers
    telemetry = grpc_obo.Telemetry(
        tracer_provider=tracer_provider, meter_provider=MeterProvider(metric_readers=[reader])
    )
    alice = await users.identity("alice")
    instrumentor = HTTPXClientInstrumentor()
    async with grpc_obo.OnBehalfOf(client, retry=FAST, telemetry=telemetry) as obo:
        if instrumented == "instrumentor_first":  # the global instrumentor, then the client
            instrumentor.instrument(tracer_provider=tracer_provider)
            http = httpx.AsyncClient(auth=obo.http_auth(scopes=[read]))
        else:  # a client built first, instrumented afterwards
            http = httpx.AsyncClient(auth=obo.http_auth(scopes=[read]))
            instrumentor.instrument_client(http, tracer_provider=tracer_provider)
        try:
            tracer = tracer_provider.get_tracer("test")
            with tracer.start_as_current_span("handler"), grpc_obo.use_identity(alice):
                response = await http.get(f"{downstream.url}/whoami")
        finally:
            await http.aclose()
            if instrumented == "instrumentor_first":
                instrumentor.uninstrument()
    assert response.status_code == 200
    spans = exporter.get_finished_spans()
    handler = next(s for s in spans if s.name == "handler")
    acquire = next(s for s in spans if s.name == "grpc_obo.obo.acquire")
    http_span = next(s for s in spans if s.kind.name == "CLIENT" and s.name.startswith("GET"))
    assert acquire.parent is not None and acquire.parent.span_id == handler.context.span_id
    assert http_span.context.trace_id == handler.context.trace_id
    traceparent = downstream.seen[0].traceparent
    assert traceparent is not None and f"{http_span.context.span_id:016x}" in traceparent
    forbidden = {f"token {i}": t for i, t in enumerate(users.secrets + downstream.tokens)}
    assert find_leaks(forbidden, spans, reader.get_metrics_data()) == []
