"""`make demo` end to end, as a new user runs it: a separate process, exit 0, the narrative and
the trace tree of one chained call, and no token anywhere in what it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_narrates_the_chain_and_prints_its_trace() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
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
    assert "forwarding the token instead: UNAUTHENTICATED" in out
    assert "2 On-Behalf-Of exchanges for 8 downstream calls" in out
    tree = out[out.index("trace ") :]
    for expected in (
        "/demo.v1.Original/GetProfile (server)",
        "grpc_obo.validate (internal)",
        "grpc_obo.obo.acquire (internal)  ",
        "source=authority",
        "/demo.v1.Downstream/GetRecord (server)",
        "oid=a11ce000-0000-4000-8000-00000000a11c",
    ):
        assert expected in tree, (expected, tree)
    # Tokens are JWTs: base64url JSON headers start with "eyJ".
    assert "eyJ" not in out
