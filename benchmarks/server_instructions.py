"""Server instructions per call under callgrind: a steady cross-check of server_bench.py.

On a shared machine, CPU time per call moves by a few percent from run to run; the number of
instructions the server process executes per call does not (about 1% here). Each variant's
server runs under `valgrind --tool=callgrind` twice, for 200 and for 1,200 unary echo calls;
the difference divided by 1,000 is its cost per call, start-up excluded. The client runs
natively. Caveat: valgrind hides the CPU's SHA extensions, so OpenSSL hashes the token in
software there (~40,000 instructions for a 1.3 KB token, where SHA-NI takes under a microsecond
natively): read "validated" with that in mind. Needs valgrind; takes about four minutes.

Run: .venv/bin/python benchmarks/server_instructions.py [--variants bare,noop,...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
import server_bench

from grpc_obo.devauthority import DevAuthority
from tests.gen.grpc_obo.testing.v1 import echo_pb2_grpc

FEW, MANY = 200, 1_200


class _PrintPort:
    def put(self, port: int) -> None:
        print(port, flush=True)


class _StdinClosed:
    def wait(self) -> None:
        sys.stdin.readline()


def serve_child(variant: str, config_file: str) -> None:
    config = json.loads(Path(config_file).read_text())
    asyncio.run(server_bench._serve(variant, config, _PrintPort(), _StdinClosed()))


async def drive(port: int, token: str, calls: int) -> None:
    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        await server_bench.PythonLoad(16).run(stub, port, metadata, calls)


def instructions(variant: str, config_file: str, token: str, calls: int) -> int:
    child = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--serve", variant, config_file,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        port = int(child.stdout.readline())
        asyncio.run(drive(port, token, calls))
        child.stdin.write("\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"no callgrind total for {variant}:\n{err[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve_child(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="bare,noop,interceptor-only,validated")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("SKIPPED: valgrind not found (Debian package valgrind); nothing measured")
        return 0
    with DevAuthority().running_in_thread() as authority:
        config: dict[str, Any] = {
            "tenant": authority.tenant_id,
            "audiences": [authority.world.app("original").client_id],
            "authority_host": authority.base_url,
            "jwks": authority.jwks(),
        }
        token = authority.mint_user_token("alice")
    variants = ["bare", *(v for v in args.variants.split(",") if v and v != "bare")]
    with tempfile.TemporaryDirectory() as tmp:
        config_file = str(Path(tmp) / "config.json")
        Path(config_file).write_text(json.dumps(config))
        print(f"server instructions per unary echo call (callgrind, {MANY} - {FEW} calls)")
        print(f"{'variant':<20}{'instructions/call':>18}{'bare/variant':>14}")
        base = 0.0
        for variant in variants:
            few = instructions(variant, config_file, token, FEW)
            many = instructions(variant, config_file, token, MANY)
            per_call = (many - few) / (MANY - FEW)
            base = base or per_call
            print(f"{variant:<20}{per_call:>18,.0f}{base / per_call:>14.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
