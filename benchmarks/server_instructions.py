"""Server instructions per call under callgrind: a steady cross-check of server_bench.py.

On a shared machine, CPU time per call moves from run to run; the number of instructions the
server process executes per call moves less, but not nothing: bare measured 481k and 537k
instructions per call in two runs of this script (how the Python client batches calls changes
the server's work per call), so compare variants within one run. Each variant's
server runs under `valgrind --tool=callgrind` twice, for 200 and for 1,200 unary echo calls;
the difference divided by 1,000 is its cost per call, start-up excluded. The client runs
natively. Caveat: valgrind hides the CPU's SHA extensions, so any SHA-256 of the token is done in
software there (~40,000 instructions for a 1.3 KB token, under a microsecond natively with
SHA-NI). Needs valgrind; takes about five minutes (`run.py --instructions`).

Run: .venv/bin/python benchmarks/server_instructions.py [--variants bare,noop,...] [--json out]
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import server_bench

FEW, MANY = 200, 1_200


class _PrintPort:
    def put(self, port: object) -> None:
        print(port, flush=True)


class _StdinClosed:
    def wait(self) -> None:
        sys.stdin.readline()


def serve_child(kind: str, config_file: str) -> None:
    config = json.loads(Path(config_file).read_text())
    server_bench.serve(kind, config, None, _PrintPort(), _StdinClosed())


def instructions(kind: str, config_file: str, tokens: Path, calls: int) -> int:
    child = subprocess.Popen(
        [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--serve", kind, config_file,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    try:
        line = child.stdout.readline()
        if not line.strip().isdigit():
            child.kill()
            raise RuntimeError(f"{kind}: server did not start: {line}{child.stderr.read()[-3000:]}")
        port = int(line)
        result = asyncio.run(h.PythonLoad().run(port, tokens=tokens, calls=calls, inflight=16))
        if result["ok"] != calls:
            raise RuntimeError(f"{kind}: {result['ok']} of {calls} calls ok: {result['codes']}")
        child.stdin.write("\n")
        child.stdin.flush()
        _, err = child.communicate(timeout=300)
    finally:
        if child.poll() is None:
            child.kill()
    found = re.search(r"Collected : (\d+)", err)
    if found is None:
        raise RuntimeError(f"no callgrind total for {kind}:\n{err[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if sys.argv[1:2] == ["--serve"]:
        serve_child(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="bare,noop,interceptor-only,grpc_obo")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("SKIPPED: valgrind not found (Debian package valgrind); nothing measured")
        return 0
    kinds = ["bare", *(v for v in args.variants.split(",") if v and v != "bare")]
    rows = []
    with h.bench_context(quick=True, load="python") as bench, tempfile.TemporaryDirectory() as tmp:
        config_file = str(Path(tmp) / "config.json")
        Path(config_file).write_text(json.dumps(bench.config))
        tokens = bench.tokens("one")
        print(f"server instructions per unary echo call (callgrind, {MANY} - {FEW} calls)")
        print(f"{'variant':<20}{'instructions/call':>18}{'bare/variant':>14}")
        base = 0.0
        for kind in kinds:
            few = instructions(kind, config_file, tokens, FEW)
            many = instructions(kind, config_file, tokens, MANY)
            per_call = (many - few) / (MANY - FEW)
            base = base or per_call
            rows.append({"name": kind, "instructions": per_call, "bare_ratio": base / per_call})
            print(f"{kind:<20}{per_call:>18,.0f}{base / per_call:>14.3f}", flush=True)
    if args.json:
        h.write_json(args.json, {"instructions": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
