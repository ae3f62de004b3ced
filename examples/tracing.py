"""Tracing for the example processes: the application's side of OpenTelemetry.

grpc_obo itself only emits spans through opentelemetry-api; each example process chooses the SDK
here. `setup()` installs it with

- a JSON-lines file exporter when `SPANS_FILE` names a file (one span per line, appended), which
  `make demo` uses to print the trace tree of a call that crossed several processes;
- an OTLP exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (Jaeger, a collector), configured by
  the standard OTEL_* variables (`OTEL_SERVICE_NAME` names the process);

and turns on opentelemetry-instrumentation-grpc for every grpc.aio server and channel created
afterwards, which puts its interceptors first: the RPC spans enclose grpc_obo's.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, GrpcAioInstrumentorServer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

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


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span to a file as one JSON object per line (see `read_spans`)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_record(span), sort_keys=True) + "\n" for span in spans]
        with self._lock:
            if self._file is None:
                return SpanExportResult.FAILURE
            self._file.writelines(lines)
            self._file.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _record(span: ReadableSpan) -> dict[str, Any]:
    context = span.context
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind.name.lower(),
        "service": str(span.resource.attributes.get("service.name", "")),
        "trace_id": f"{context.trace_id:032x}" if context else "",
        "span_id": f"{context.span_id:016x}" if context else "",
        "parent_id": f"{parent.span_id:016x}" if parent else None,
        "start_ns": span.start_time or 0,
        "end_ns": span.end_time or 0,
        "attributes": {key: _plain(value) for key, value in (span.attributes or {}).items()},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def setup(service_name: str, environ: Mapping[str, str] | None = None) -> TracerProvider:
    """Install the SDK (see the module docstring); the caller shuts the provider down at exit."""
    env = os.environ if environ is None else environ
    provider = TracerProvider(
        resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service_name})
    )
    if env.get("SPANS_FILE"):
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(env["SPANS_FILE"])))
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    return provider


def read_spans(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Every span the given JSON-lines files hold (missing files hold none)."""
    spans: list[dict[str, Any]] = []
    for path in paths:
        if Path(path).exists():
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    spans.append(json.loads(line))
    return spans


def tree(spans: Sequence[Mapping[str, Any]], trace_id: str) -> list[str]:
    """The spans of one trace as indented lines, children in start order."""
    mine = [s for s in spans if s["trace_id"] == trace_id]
    ids = {s["span_id"] for s in mine}
    children: dict[str | None, list[Mapping[str, Any]]] = {}
    for span in mine:
        parent = span["parent_id"]
        children.setdefault(parent if parent in ids else None, []).append(span)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_ns"]):
            took = (span["end_ns"] - span["start_ns"]) / 1e6
            attributes = span["attributes"]
            shown = " ".join(
                f"{key.rsplit('.', 1)[-1]}={attributes[key]}" for key in SHOWN if key in attributes
            )
            where = f"{span['kind']}, {span['service']}" if span["service"] else span["kind"]
            lines.append(f"{'  ' * depth}{span['name']} ({where})  {took:.1f} ms  {shown}".rstrip())
            walk(span["span_id"], depth + 1)

    walk(None, 0)
    return lines
