"""The example chain traced into a real Jaeger 2: `make demo` run as a user would, exporting
over OTLP with the standard OTEL_* variables; the trace read back from Jaeger's query API.

Checks the tree an operator sees (client -> Original server -> validation and exchange ->
Downstream client -> Downstream server -> validation, one trace), the identity attributes that
let them search by user, and that nothing secret reached the trace backend.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.jaeger import Jaeger

ROOT = Path(__file__).resolve().parents[2]
ALICE = "a11ce000-0000-4000-8000-00000000a11c"
CONTOSO = "7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
CLIENT_APP = "b1e0f1c8-2a3d-4e5f-9a8b-0c0ffee0c1c1"
ORIGINAL_APP = "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1"
# Dev authority secrets and passwords are "dev" + 37 URL-safe characters; tokens and client
# assertions are JWTs, whose base64url JSON header starts with "eyJ".
SECRET_SHAPES = (re.compile(r"dev[A-Za-z0-9_-]{37}"), re.compile(r"eyJ[A-Za-z0-9_-]{8,}"))


def _run_demo(jaeger: Jaeger) -> tuple[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(jaeger.otel_env("grpc-obo-demo"))
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    found = re.search(r"look up trace ([0-9a-f]{32}) in Jaeger", out)
    assert found, out
    return found.group(1), out


def _parent(trace: Any, span: dict[str, Any]) -> dict[str, Any]:
    parents = [s for s in trace.spans if s["span_id"] == span["parent_span_id"]]
    assert len(parents) == 1, (span["name"], trace.names())
    return parents[0]


def test_the_chain_trace_in_jaeger_has_every_hop_and_no_secret(jaeger: Jaeger) -> None:
    trace_id, out = _run_demo(jaeger)
    trace = jaeger.fetch_trace(trace_id, expect_spans=14, timeout=20)
    spans = trace.spans
    assert {s["trace_id"] for s in spans} == {trace_id}
    by_kind = {(s["name"], s["kind"]): s for s in spans}

    original = by_kind[("/demo.v1.Original/GetProfile", "SERVER")]
    outbound = by_kind[("/demo.v1.Downstream/GetRecord", "CLIENT")]
    downstream = by_kind[("/demo.v1.Downstream/GetRecord", "SERVER")]
    validations = [s for s in spans if s["name"] == "grpc_obo.validate"]
    acquire = trace.one("grpc_obo.obo.acquire")

    # client app -> Original server
    client = by_kind[("/demo.v1.Original/GetProfile", "CLIENT")]
    assert _parent(trace, original) is client
    # Original server -> its validation and the outbound call; the exchange precedes the
    # Downstream server's work and sits under the Original server span's subtree.
    assert {_parent(trace, v)["span_id"] for v in validations} == {
        original["span_id"],
        downstream["span_id"],
    }
    assert _parent(trace, outbound) is original
    assert _parent(trace, acquire) is outbound  # the global client instrumentor goes first
    assert acquire["attributes"]["grpc_obo.token.source"] == "authority"
    assert acquire["end_ns"] <= downstream["start_ns"]
    steps = [s for s in spans if s["name"] == "grpc_obo.authority.request"]
    assert steps and all(_parent(trace, s) is acquire for s in steps)
    # Downstream client -> Downstream server -> its validation
    assert _parent(trace, downstream) is outbound
    # The first token at each hop fetched discovery + JWKS, in the caller's trace.
    fetches = trace.named("grpc_obo.keys.fetch")
    assert sorted(_parent(trace, f)["span_id"] for f in fetches) == sorted(
        [client["span_id"]] * 2 + [outbound["span_id"]] * 2
    )

    # Who the chain acted for, on both server spans: the same user, a different calling app.
    for server, app in ((original, CLIENT_APP), (downstream, ORIGINAL_APP)):
        attributes = server["attributes"]
        assert attributes["grpc_obo.user.oid"] == ALICE
        assert attributes["grpc_obo.user.tid"] == CONTOSO
        assert attributes["grpc_obo.client.id"] == app
    assert all(v["attributes"]["grpc_obo.result"] == "accepted" for v in validations)

    # Nothing secret reached Jaeger (nor the demo's own output).
    for text in (trace.raw, out):
        for shape in SECRET_SHAPES:
            assert not shape.search(text), shape.pattern
    for word in ("authorization", "Bearer", "password", "client_secret", "alice@"):
        assert word not in trace.raw, word
