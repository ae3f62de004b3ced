"""A replica starting under load: 1,000 users' first calls reach a server that has no keys yet.

Each round starts a new server process (pinned to one CPU) and, once it listens, sends 1,000
unary calls at once, every one with a token the server never saw, from 1,000 users registered
at the dev authority. Two replicas, each new in every round, rounds in rotated order:

  grpc_obo        grpc_obo's interceptor and validator fetching discovery + JWKS from the dev
                  authority on the first call (no `start()`), verifying every token
  checks nothing  the same interceptor with a validator that accepts every call without
                  looking (benchmarks/server_bench.py's `interceptor-only`): the replica's floor

Reported per replica: failed calls (must be 0), p50 / p99 of the calls' latency from the moment
all were sent, the time to serve all 1,000, and for grpc_obo the key fetches the authority
answered in that round (must be 1 discovery + 1 JWKS). `tests/validation/test_replica_start.py`
asserts the same no-failure and one-fetch properties, without timings.

Run: .venv/bin/python benchmarks/replica_bench.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _harness as h
import grpc
import server_bench

import grpc_obo

USERS = 1_000


def _remote_options(config: dict[str, Any]) -> grpc_obo.ValidatorOptions:
    """The Original API's validator fetching its keys from the authority (not a static JWKS)."""
    return grpc_obo.ValidatorOptions(
        tenant=config["tenant"],
        audiences=frozenset(config["original"]["audiences"]),
        authority_host=config["authority_host"],
        v1_issuer_host=config["authority_host"],
        ca_file=config["ca_file"],
    )


def serve(kind: str, config: dict[str, Any], cpu: int | None, queue: Any, stop: Any) -> None:
    """h.serve_forever's life, closing grpc_obo's validator (its HTTP session) at the end."""
    h.pin(cpu)

    async def main() -> None:
        validator = None
        try:
            if kind == "grpc_obo":
                validator = grpc_obo.TokenValidator(_remote_options(config))
                interceptor = grpc_obo.server_interceptor(validator)
            else:
                interceptor = server_bench._interceptors("interceptor-only", config)[0]
            server = grpc.aio.server(interceptors=[interceptor])
            h.echo_pb2_grpc.add_EchoServicer_to_server(h.Echo(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
        except BaseException as exc:
            queue.put(f"{type(exc).__name__}: {exc}")
            raise
        queue.put(port)
        await asyncio.to_thread(stop.wait)
        await server.stop(grace=0.5)
        if validator is not None:
            await validator.close()

    asyncio.run(main())


async def burst(port: int, tokens: list[str]) -> dict[str, Any]:
    """Every token's first call at once; latencies from the moment all were sent."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await channel.channel_ready()
        stub = h.echo_pb2_grpc.EchoStub(channel)
        request = h.echo_pb2.EchoRequest(text="hi")
        done: list[float] = []
        failed: list[str] = []

        async def one(token: str) -> None:
            try:
                await stub.UnaryUnary(
                    request, metadata=(("authorization", f"Bearer {token}"),), timeout=60
                )
                done.append(time.perf_counter())
            except grpc.aio.AioRpcError as exc:
                failed.append(exc.code().name)

        calls = [one(token) for token in tokens]
        started = time.perf_counter()
        await asyncio.gather(*calls)
    latencies = sorted(t - started for t in done)

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3 if done else 0.0

    return {
        "ok": len(done),
        "failed": len(failed),
        "codes": sorted(set(failed)),
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "all_ms": (max(done) - started) * 1e3 if done else 0.0,
    }


async def run(bench: h.Bench, *, rounds: int) -> dict[str, Any]:
    config = bench.config
    pinned = h.can_pin()
    variants = ["grpc_obo", "checks-nothing"]
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    h.log(f"replica bench: {USERS:,} first calls on a new replica, {rounds} rounds")
    for round_ in range(rounds):
        # Fresh tokens every round: "never seen" also for the authority's users.
        tokens = [bench.mint(i) for i in range(USERS)]
        for name in h.rotated(variants, round_):
            with h.Processes() as processes:
                port = processes.start(serve, name, config, h.SERVER_CPU if pinned else None)
                discovery = bench.authority.requests.count(endpoint="discovery")
                jwks = bench.authority.requests.count(endpoint="jwks")
                with h.driver_pinned(pinned):
                    result = await burst(port, tokens)
                result["discovery_fetches"] = (
                    bench.authority.requests.count(endpoint="discovery") - discovery
                )
                result["jwks_fetches"] = bench.authority.requests.count(endpoint="jwks") - jwks
            results[name].append(result)
            h.log(
                f"  {name}: {result['ok']:,} ok, {result['failed']} failed, p50 "
                f"{result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, all "
                f"{result['all_ms']:.0f} ms, key fetches {result['discovery_fetches']}+"
                f"{result['jwks_fetches']}"
            )
    out: dict[str, Any] = {"users": USERS, "rounds": rounds, "pinned": pinned, "variants": {}}
    for name, rows in results.items():
        out["variants"][name] = {
            "failed": sum(r["failed"] for r in rows),
            "codes": sorted({c for r in rows for c in r["codes"]}),
            "p50_ms": h.spread([r["p50_ms"] for r in rows]),
            "p99_ms": h.spread([r["p99_ms"] for r in rows]),
            "all_ms": h.spread([r["all_ms"] for r in rows]),
            "key_fetches": [[r["discovery_fetches"], r["jwks_fetches"]] for r in rows],
        }
    out["all_vs_checks_nothing"] = h.spread(
        [
            g["all_ms"] / c["all_ms"]
            for g, c in zip(results["grpc_obo"], results["checks-nothing"], strict=True)
        ]
    )
    return out


def table(section: dict[str, Any]) -> str:
    labels = {
        "grpc_obo": "grpc_obo (keys fetched on the first call)",
        "checks-nothing": "same interceptor, validator that checks nothing",
    }
    lines = [
        f"| new replica, {section['users']:,} first calls at once | failed | p50 ms | p99 ms "
        "| all served, ms | key fetches (discovery + JWKS) per round |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in labels.items():
        v = section["variants"][name]
        fetches = ", ".join(f"{d}+{j}" for d, j in v["key_fetches"]) if name == "grpc_obo" else "-"
        lines.append(
            f"| {label} | {v['failed']} | {v['p50_ms']['median']:.0f} | "
            f"{v['p99_ms']['median']:.0f} | {v['all_ms']['median']:.0f} "
            f"({v['all_ms']['min']:.0f}–{v['all_ms']['max']:.0f}) | {fetches} |"
        )
    lines.append(
        f"\nTime to serve all, grpc_obo / checks nothing: "
        f"{h.fmt_spread(section['all_vs_checks_nothing'])} (median, range over rounds)."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    with h.bench_context(quick=args.quick) as bench:
        section = asyncio.run(run(bench, rounds=rounds))
    print(table(section))
    if args.json:
        h.write_json(args.json, {"machine": h.machine(), "replica": section})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
