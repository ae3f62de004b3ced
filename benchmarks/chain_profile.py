"""Where the Original (the chain's middle tier) spends its CPU under load: py-spy samples.

Starts the chain variants of chain_bench (each tier its own process, pinned as there), drives
each with the Go load generator while `py-spy record` samples the Original's process, and prints
per variant the share of samples (and µs per call, from the process's CPU per call) in
grpc_obo's code, in grpc's interceptor machinery and in the rest, plus the functions with the
most samples of their own. What it finds is in the README's chain section (issue 23 point 1).

Run: .venv/bin/python benchmarks/chain_profile.py [--seconds 8] [--users one|1k]
     [--variants none,noop-client,floor,grpc_obo] [--raw DIR]
Needs py-spy (in the `bench` extra) and ptrace permission on the server processes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
from chain_bench import CHAINS, serve_downstream, serve_original

# Frames are "function (file:line)"; a file path decides the bucket of a sample's frame.
BUCKETS = (
    ("grpc_obo", "grpc_obo/"),
    ("grpc.aio (python)", "grpc/aio/"),
    ("grpc (cython)", "grpc/_cython"),
)


def bucket_of(frame: str) -> str | None:
    for name, marker in BUCKETS:
        if marker in frame:
            return name
    return None


def _function(frame: str) -> str:
    """`function (file:line)` without the line: samples add up per function."""
    head, sep, place = frame.rpartition(" (")
    return f"{head} ({place.rpartition(':')[0]})" if sep and ":" in place else frame


def analyse(raw: Path, top: int) -> dict[str, Any]:
    """Samples by bucket (inclusive: a sample counts once per bucket on its stack) and the
    functions with the most self samples."""
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()  # grpc_obo functions, inclusive
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        if frames[0].startswith("_bootstrap "):  # another thread (idle: stop.wait, MSAL pool)
            continue
        total += count
        for name in {b for b in map(bucket_of, frames) if b is not None}:
            inclusive[name] += count
        own[frames[-1]] += count
        for frame in {f for f in frames if "grpc_obo/" in f}:
            ours[frame] += count
    return {
        "samples": total,
        "inclusive": dict(inclusive),
        "top_self": own.most_common(top),
        "grpc_obo": ours.most_common(top),
    }


async def profile(
    bench: h.Bench,
    variants: list[str],
    users: str,
    seconds: float,
    raw: Path,
    native: bool,
    which: str = "original",
) -> None:
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    config = {
        **bench.config,
        "floor_tokens": [bench.mint(i, audience="downstream") for i in range(h.USERS)],
    }
    tokens = bench.tokens(users)
    probe = bench.tokens("one").read_text().split()[0]
    pinned = h.can_pin() and bench.load.kind == "go"
    with h.Processes() as processes, contextlib.ExitStack() as stack:
        started: dict[str, tuple[int, int]] = {}
        for variant in variants:
            original_kind, downstream_kind, _ = CHAINS[variant]
            down = processes.start(
                serve_downstream, downstream_kind, config, h.LOAD_CPU if pinned else None
            )
            up = processes.start(
                serve_original, original_kind, config, down, h.SERVER_CPU if pinned else None
            )
            tier = processes._processes[-1 if which == "original" else -2]
            started[variant] = (up, tier.pid)
        stack.enter_context(h.driver_pinned(pinned))
        for variant in variants:  # warm-up: every token seen, exchanged, cached
            await bench.load.run(started[variant][0], tokens=tokens, calls=2_000, inflight=64)
        for variant in variants:
            port, pid = started[variant]
            out = raw / f"{variant}-{users}-{which}.txt"
            probe_port = port if which == "original" else None
            cpu0, served0 = await h.server_state(port, probe) if probe_port else (0.0, 0)
            spy = subprocess.Popen(  # noqa: ASYNC220 - a sampler beside the load, waited below
                [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                 "--rate", "250", "--native" if native else "--nonblocking",
                 "--format", "raw", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(0.3)
            result = await bench.load.run(
                port, tokens=tokens, duration=seconds - 0.8, inflight=64, conns=4
            )
            cpu1, served1 = await h.server_state(port, probe) if probe_port else (0.0, 0)
            _, err = await asyncio.to_thread(spy.communicate)
            if spy.returncode != 0 or not out.exists():
                raise SystemExit(f"py-spy failed: {err.decode()[-800:]}")
            cpu_us = (cpu1 - cpu0) / max(served1 - served0, 1) * 1e6
            found = analyse(out, 12)
            samples = max(found["samples"], 1)
            print(f"\n== {variant} ({CHAINS[variant][2]}), {users}: {result['rps']:,.0f} RPS, "
                  f"Original {cpu_us:.0f} µs CPU/call, {found['samples']:,} samples")  # fmt: skip
            for name, count in sorted(found["inclusive"].items(), key=lambda kv: -kv[1]):
                share = count / samples
                print(f"   {name:<20} {share:6.1%}  ~{share * cpu_us:5.0f} µs/call")
            print("   grpc_obo functions (inclusive):")
            for frame, count in found["grpc_obo"]:
                print(f"     {count / samples:6.1%}  {frame}")
            print("   most self samples:")
            for frame, count in found["top_self"]:
                print(f"     {count / samples:6.1%}  {frame}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--users", choices=["one", "1k"], default="one")
    parser.add_argument("--variants", default="none,noop-client,floor,grpc_obo")
    parser.add_argument("--tier", choices=["original", "downstream"], default="original")
    parser.add_argument("--native", action="store_true", help="C frames too (pauses the process)")
    parser.add_argument("--raw", type=Path, default=Path("/tmp/grpc-obo-chain-profile"))
    args = parser.parse_args()
    variants = args.variants.split(",")
    began = time.perf_counter()
    args.raw.mkdir(parents=True, exist_ok=True)
    with h.bench_context(quick=True) as bench:
        asyncio.run(
            profile(bench, variants, args.users, args.seconds, args.raw, args.native, args.tier)
        )
    h.log(f"profiled in {time.perf_counter() - began:.0f} s; raw stacks in {args.raw}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
