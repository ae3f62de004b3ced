"""`make demo`'s second part (`python -m examples.mixed`), as a new user runs it: the mixed
chain (HTTPS front door -> gRPC -> Graph-like API, each hop On-Behalf-Of) narrates a profile,
a step-up and a revocation, prints the trace with the HTTP hop, exits 0 and prints no token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_the_mixed_demo_narrates_step_up_and_revocation_and_traces_the_http_hop() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-m", "examples.mixed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "GET /profile -> {'displayName': 'Alice Example'}" in out
    assert "GET /key -> 401, insufficient_claims" in out and '"acrs"' in out
    assert "GET /key -> {'key_id': 'profile-key-1'}" in out
    assert 'GET /profile -> 401, claims={"access_token":{"nbf"' in out
    assert "alice signs in again: GET /profile -> {'displayName': 'Alice Example'}" in out
    tree = out[out.index("\ntrace ") :]
    # The HTTP hop (the front door's SERVER span) holds the gRPC hop, which holds Graph's call.
    assert re.search(r"\n {6}GET /profile \(server", tree), tree
    assert "/workspace.v1.DocumentStore/GetDocument (server" in tree
    assert re.search(r"eyJ[A-Za-z0-9_-]{10,}\.", out) is None  # no token, anywhere
