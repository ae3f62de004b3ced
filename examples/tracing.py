"""Tracing for the demo: the application's side of OpenTelemetry (grpc_obo itself only emits).

`setup()` installs the SDK with an in-memory exporter (to print the trace tree) and, when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, an OTLP exporter too (Jaeger, a collector); it turns on
opentelemetry-instrumentation-grpc for every grpc.aio server and channel created afterwards,
which puts its interceptors first: the RPC spans enclose grpc_obo's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

# What the tree shows of each span: identities and the token source, never a token.
SHOWN = (
    "grpc_obo.user.oid",
    "grpc_obo.user.tid",
    "grpc_obo.client.id",
    "grpc_obo.token.source",
    "grpc_obo.authority.step",
    "grpc_obo.result",
    "error.type",
)


def setup(service_name: str = "grpc-obo-demo") -> tuple[TracerProvider, InMemorySpanExporter]:
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
    )
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    return provider, memory


def tree(spans: Sequence[ReadableSpan], trace_id: int) -> list[str]:
    """The spans of one trace as indented lines, children in start order."""
    mine = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    ids = {s.context.span_id for s in mine if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = {}
    for span in mine:
        parent = span.parent.span_id if span.parent is not None else None
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_time or 0):
            took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            attributes = span.attributes or {}
            shown = " ".join(
                f"{key.rsplit('.', 1)[-1]}={attributes[key]}" for key in SHOWN if key in attributes
            )
            kind = span.kind.name.lower()
            lines.append(f"{'  ' * depth}{span.name} ({kind})  {took:.1f} ms  {shown}".rstrip())
            if span.context is not None:
                walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines
