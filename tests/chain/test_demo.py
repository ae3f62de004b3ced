"""`make demo` end to end, as a new user runs it: a separate process that starts the authority
and three APIs as processes of their own, every hop over TLS with certificates from the
authority's CA, narrates the chain and its refusals, prints the trace tree of one chained call
read back from every process's spans, exits 0, leaves no process behind, and prints no token and
no private key. `PLAINTEXT_LOOPBACK=1` is the explicit opt-out, and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

ALICE = "oid=a11ce000-0000-4000-8000-00000000a11c tid=7f3a1c2e-5b44-4e1a-9d1c-0c0ffee00001"
CAROL = "oid=ca501000-0000-4000-8000-0000000ca501 tid=9b2d4e6f-8a11-4c3b-b2a0-0c0ffee00002"


def _pids(out: str) -> list[int]:
    return [int(part.split(")")[0]) for part in out.split("(pid ")[1:]]


TLS = (
    "every hop over TLS: each API serves a certificate from the dev authority's CA, which the "
    "client app and the middle tiers trust"
)


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k != "PLAINTEXT_LOOPBACK"
    }
    return {**env, **extra}


def test_the_demo_narrates_the_chain_and_prints_its_trace() -> None:
    env = _env()
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
    narrative = out[: out.index("\ntrace ")]
    # TLS on every hop: examples.processes checks each API said "(TLS)" before the demo says so.
    assert TLS in narrative.splitlines()[2], out
    assert "PLAINTEXT" not in out
    for expected in (
        # sign-in, and what each hop saw of each user: the same oid/tid, azp the previous hop
        "alice (Contoso) signs in",
        "carol (Fabrikam) signs in",
        f"workspace saw {ALICE} azp=b1e0f1c8-2a3d-4e5f-9a8b-0c0ffee0c1c1 (the client app)",
        f"store     saw {ALICE} azp=3c9a4e21-7d0b-4f5e-a1c2-0c0ffee0a1a1 (the Workspace)",
        f"vault     saw {ALICE} azp=5d0e9c57-4c1f-4a36-8f6e-0c0ffee0d0d0 (the store)",
        f"vault     saw {CAROL}",
        # the exchange: a miss at each hop, then hits
        "exchanges for alice: first call Workspace 1 + store 1 (cache miss at each hop), "
        "next 3 calls +0 +0 (cache hits)",
        # the refusals
        "straight to the store (wrong audience): UNAUTHENTICATED",
        "a user operation: PERMISSION_DENIED",
        "bob asks for 'plan' (alice has one): NOT_FOUND",
        "bob names alice as the owner in the request: PERMISSION_DENIED",
        "relayed by the store and the Workspace to the client app: UNAUTHENTICATED, "
        'error="insufficient_claims"',
        "dave signs in again, answering the challenge (MFA): 1 stored",
        'PERMISSION_DENIED, Bearer error="insufficient_scope"',
        "consent granted again: bob's upload stores 1",
        # no middle tier holds a secret; a service account nobody federated is refused
        "no middle tier holds a secret or a private key: the Workspace and the store prove "
        "who they are with workload identity",
        "running as service account demo:intruder presents its token as the Workspace's "
        "credential: invalid_client, AADSTS700213",
        "exit codes {'workspace': 0, 'store': 0, 'vault': 0}",
    ):
        assert expected in narrative, (expected, out)
    assert "UNEXPECTED" not in out

    tree = out[out.index("\ntrace ") :]
    for expected in (
        "client app: alice UploadDocuments (internal, grpc-obo-demo)",
        "/workspace.v1.Workspace/UploadDocuments (server, grpc-obo-demo-workspace)",
        "grpc_obo.validate (internal, grpc-obo-demo-workspace)",
        "grpc_obo.obo.acquire (internal, grpc-obo-demo-workspace)",
        "/workspace.v1.DocumentStore/UploadDocuments (server, grpc-obo-demo-store)",
        "grpc_obo.obo.acquire (internal, grpc-obo-demo-store)",
        "/workspace.v1.KeyVault/GetDataKey (server, grpc-obo-demo-vault)",
        "source=authority",
        ALICE,
    ):
        assert expected in tree, (expected, tree)

    # Every process the demo started is gone.
    pids = _pids(out)
    assert len(pids) == 4, out
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        ), pid
    # Tokens are JWTs: base64url JSON headers start with "eyJ". Keys are PEM.
    assert "eyJ" not in out
    assert "PRIVATE KEY" not in out


def test_plaintext_loopback_is_the_demos_explicit_opt_out() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=_env(PLAINTEXT_LOOPBACK="1"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert (
        "WARNING: PLAINTEXT_LOOPBACK=1: every hop without TLS; bearer tokens cross loopback "
        "unencrypted"
    ) in out.splitlines()[2], out
    assert TLS not in out
    assert "consent granted again: bob's upload stores 1" in out
    assert "eyJ" not in out


def test_ctrl_c_stops_every_process_the_demo_started() -> None:
    env = _env()
    demo = subprocess.Popen(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        started = ""
        for line in demo.stdout:  # bounded by the demo's own start-up timeouts
            if line.startswith("dev authority at"):
                started = line
                break
        assert started, "the demo never said it started its processes"
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        demo.kill()
        demo.wait(10)
    assert demo.returncode == 130, rest
    assert "every process the demo started is stopped" in rest
    pids = _pids(started)
    assert len(pids) == 4, started
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), (pid, rest)
