"""The example chain traced into a real Jaeger 2: `make demo` run as a user would, every process
(the client app, the Workspace, the store and the vault) exporting over OTLP with the standard
OTEL_* variables; the trace read back from Jaeger's query API.

Checks the tree an operator sees across four processes (client -> Workspace server ->
validation, exchange -> store client -> store server -> validation, exchange -> vault client ->
vault server -> validation, one trace), the identity attributes that let them search by user,
and that nothing secret reached the trace backend.
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
WORKSPACE_APP = "3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1"  # the "original" registration
STORE_APP = "5d0e9c57-4c1f-4a36-8f6e-0c0ffee0d0d0"  # the "downstream" registration
WORKSPACE = "/workspace.v1.Workspace/UploadDocuments"
STORE = "/workspace.v1.DocumentStore/UploadDocuments"
VAULT = "/workspace.v1.KeyVault/GetDataKey"
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
    trace = jaeger.fetch_trace(trace_id, expect_spans=16, timeout=20)
    spans = trace.spans
    assert {s["trace_id"] for s in spans} == {trace_id}
    by_kind = {(s["name"], s["kind"]): s for s in spans}

    client = by_kind[(WORKSPACE, "CLIENT")]
    workspace = by_kind[(WORKSPACE, "SERVER")]
    to_store = by_kind[(STORE, "CLIENT")]
    store = by_kind[(STORE, "SERVER")]
    to_vault = by_kind[(VAULT, "CLIENT")]
    vault = by_kind[(VAULT, "SERVER")]
    # Each process exported its own spans, under its own service name.
    assert client["service_name"] == "grpc-obo-demo"
    for span, service in (
        (workspace, "workspace"),
        (to_store, "workspace"),
        (store, "store"),
        (to_vault, "store"),
        (vault, "vault"),
    ):
        assert span["service_name"] == f"grpc-obo-demo-{service}", span

    # client app -> Workspace server -> store client -> store server -> vault client -> vault
    assert _parent(trace, workspace) is client
    assert _parent(trace, to_store) is workspace
    assert _parent(trace, store) is to_store
    assert _parent(trace, to_vault) is store
    assert _parent(trace, vault) is to_vault
    # Each server validated its token, before its server span started: the validation is that
    # span's sibling under the caller's client span. Each middle tier's exchange sits under its
    # outbound call (the global client instrumentor goes first) and ends before the next server
    # starts.
    validations = trace.named("grpc_obo.validate")
    assert sorted(_parent(trace, v)["span_id"] for v in validations) == sorted(
        s["span_id"] for s in (client, to_store, to_vault)
    )
    # Every span lies within its parent in time (Jaeger draws a child outside it otherwise).
    for span in spans:
        if span.get("parent_span_id"):
            parent = _parent(trace, span)
            assert parent["start_ns"] <= span["start_ns"], (span["name"], parent["name"])
            assert span["end_ns"] <= parent["end_ns"], (span["name"], parent["name"])
    assert all(v["attributes"]["grpc_obo.result"] == "accepted" for v in validations)
    acquires = trace.named("grpc_obo.obo.acquire")
    assert sorted(_parent(trace, a)["span_id"] for a in acquires) == sorted(
        s["span_id"] for s in (to_store, to_vault)
    )
    for acquire, next_server in zip(
        sorted(acquires, key=lambda s: s["start_ns"]), (store, vault), strict=True
    ):
        assert acquire["attributes"]["grpc_obo.token.source"] == "authority"  # a miss
        assert acquire["end_ns"] <= next_server["start_ns"]
    steps = trace.named("grpc_obo.authority.request")
    assert len(steps) == 4 and all(_parent(trace, s) in acquires for s in steps)
    # Signing keys were loaded at each API's start-up, not in this call.
    assert trace.named("grpc_obo.keys.fetch") == []

    # Who the chain acted for, on every server span: the same user, the previous hop as client.
    for server, app in ((workspace, CLIENT_APP), (store, WORKSPACE_APP), (vault, STORE_APP)):
        attributes = server["attributes"]
        assert attributes["grpc_obo.user.oid"] == ALICE
        assert attributes["grpc_obo.user.tid"] == CONTOSO
        assert attributes["grpc_obo.client.id"] == app

    # Nothing secret reached Jaeger (nor the demo's own output).
    for text in (trace.raw, out):
        for shape in SECRET_SHAPES:
            assert not shape.search(text), shape.pattern
    for word in ("authorization", "Bearer", "password", "client_secret", "alice@"):
        assert word not in trace.raw, word
